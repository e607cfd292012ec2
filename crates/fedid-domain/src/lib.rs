//! fedid's domain: every rule of the federation protocol and the user API,
//! behind port traits. It knows nothing of HTTP, SQL, sockets, configuration
//! files or logging backends; adapters translate to and from it.

#![forbid(unsafe_code)]

pub mod base64url;
pub mod envelope;
pub mod handle;
pub mod json;
pub mod keys;
pub mod time;

pub use envelope::{Envelope, EnvelopeError, MessageType, Nonce, ReplayKey, UnsignedEnvelope, VerifiedEnvelope};
pub use handle::{Alias, Domain, DomainPolicy, Handle, Scheme};
pub use keys::{EncryptionKey, EncryptionSecret, KeyError, Signature, SigningKey, SigningSecret};
pub use time::{Timestamp, UnixTime};

pub mod key_directory;
pub mod model;
pub mod ports;
pub mod services;
pub mod settings;

pub use key_directory::KeyDirectory;
pub use model::*;
pub use ports::{Clock, DeliveryFailure, KeyFetcher, Random, Store, StoreError, Transport, Tx};
pub use services::*;
pub use settings::Settings;
