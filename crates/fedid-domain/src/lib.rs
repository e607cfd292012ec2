//! fedid's domain: every rule of the federation protocol and the user API,
//! behind port traits. It knows nothing of HTTP, SQL, sockets, configuration
//! files or logging backends; adapters translate to and from it.
//!
//! The use cases are methods of [`Fedid`], built from [`Settings`] and
//! [`services::Ports`] (a [`Store`], a [`Clock`], a [`Random`], a
//! [`Transport`] and a [`KeyDirectory`] over a [`KeyFetcher`]);
//! `fedid-testkit` has in-memory adapters for all of them.
//!
//! Signing an envelope as a client does, then checking it as a receiving
//! server does (PROTOCOL.md sections 3 to 5):
//!
//! ```
//! use fedid_domain::{DomainPolicy, Envelope, Handle, MessageType, Nonce, SigningSecret};
//! use fedid_domain::{Timestamp, UnixTime, UnsignedEnvelope};
//!
//! let secret = SigningSecret::from_seed(&[7; 32])?;
//! let policy = DomainPolicy::HTTPS_PUBLIC;
//! let signed = UnsignedEnvelope {
//!     message_type: MessageType::RelationshipRequest,
//!     message_version: 1,
//!     nonce: Nonce::empty(),
//!     from: Handle::parse("alice@a.example", policy)?,
//!     to: Handle::parse("bob@b.example", policy)?,
//!     timestamp: Timestamp::from_instant(UnixTime::from_secs(1_800_000_000)),
//!     payload: Default::default(),
//! }
//! .sign(&secret);
//! let wire = signed.wire_form();
//!
//! // The receiving server: the member rules first, then the signature
//! // against the sender's published key. Only a check makes a
//! // `VerifiedEnvelope`, and services act on nothing else.
//! let received = Envelope::parse(wire.as_bytes(), policy)?;
//! let verified = received.verify(&secret.public_key()).map_err(|_| "bad signature")?;
//! assert_eq!(verified.from().as_str(), "alice@a.example");
//!
//! // A changed byte breaks it.
//! let forged = wire.replace("bob@b.example", "eve@b.example");
//! let forged = Envelope::parse(forged.as_bytes(), policy)?;
//! assert!(forged.verify(&secret.public_key()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
pub mod keylog;
pub mod model;
pub mod ports;
pub mod services;
pub mod settings;

pub use key_directory::KeyDirectory;
pub use model::*;
pub use ports::{Clock, DeliveryFailure, KeyFetcher, Random, Store, StoreError, Transport, Tx};
pub use services::*;
pub use settings::Settings;
