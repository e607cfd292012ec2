//! Public keys and signatures (PROTOCOL.md section 2).

use std::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;

use crate::base64url;

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32 (or 64) bytes of base64url.
    #[error("not base64url of 32 bytes")]
    Encoding,
    /// Not the canonical encoding of a curve point.
    #[error("not a canonical Ed25519 point")]
    NotCanonical,
    /// A point of small order, which would let signatures verify for any message.
    #[error("an Ed25519 point of small order")]
    SmallOrder,
    /// An X25519 key that section 2 refuses.
    #[error("not a valid X25519 public key")]
    InvalidX25519,
}

/// A validated Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SigningKey([u8; 32]);

impl SigningKey {
    /// Reads a signing key (section 2: lenient base64 in, every point check).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(base64url::decode_array(text).ok_or(KeyError::Encoding)?)
    }

    /// Valid only if it decodes to a curve point, re-encodes to the same
    /// bytes, and is not of small order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let point = CompressedEdwardsY(bytes).decompress().ok_or(KeyError::NotCanonical)?;
        if point.compress().to_bytes() != bytes {
            return Err(KeyError::NotCanonical);
        }
        if point.is_small_order() {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self(bytes))
    }

    /// A key read back from storage, where only keys that passed
    /// [`SigningKey::parse`] are written: skips the point checks, which
    /// cost more than the signature check itself. A corrupted stored key
    /// can only make verification fail.
    pub fn from_stored_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Base64url without padding, as the server writes keys.
    pub fn to_base64url(&self) -> String {
        base64url::encode(&self.0)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.to_base64url())
    }
}

/// u-coordinates of X25519 points of order 8 (the other low-order values
/// are 0, 1 and p-1).
const X25519_ORDER_8: [[u8; 32]; 2] = [
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44,
        0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
    ],
];

/// A validated X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// Reads an encryption key (section 2).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(base64url::decode_array(text).ok_or(KeyError::Encoding)?)
    }

    /// An encryption key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        if bytes[31] & 0x80 != 0 || !below_field_prime(&bytes) {
            return Err(KeyError::InvalidX25519);
        }
        let mut one = [0u8; 32];
        one[0] = 1;
        let mut p_minus_one = [0xffu8; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        let low_order = bytes == [0u8; 32] || bytes == one || bytes == p_minus_one || X25519_ORDER_8.contains(&bytes);
        if low_order {
            return Err(KeyError::InvalidX25519);
        }
        Ok(Self(bytes))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Base64url without padding.
    pub fn to_base64url(&self) -> String {
        base64url::encode(&self.0)
    }
}

/// u < 2^255 - 19 for a little-endian value whose bit 255 is clear.
fn below_field_prime(le: &[u8; 32]) -> bool {
    !(le[31] == 0x7f && le[1..31].iter().all(|b| *b == 0xff) && le[0] >= 0xed)
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({})", self.to_base64url())
    }
}

/// An Ed25519 signature: 64 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Reads a signature: 64 bytes of base64url; `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        base64url::decode_array(text).map(Self)
    }

    /// A signature from its 64 bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Base64url without padding.
    pub fn to_base64url(&self) -> String {
        base64url::encode(&self.0)
    }

    /// Strict Ed25519 verification: ring refuses an unreduced `S`; the key
    /// was already checked for canonical encoding and small order.
    pub fn verify(&self, key: &SigningKey, message: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.as_bytes())
            .verify(message, &self.0)
            .is_ok()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_base64url();
        write!(f, "Signature({}…)", text.get(..8).unwrap_or_default())
    }
}

/// A client's private signing key, for tools and tests: the server never
/// holds one. Its `Debug` shows only the public half.
pub struct SigningSecret {
    pair: ring::signature::Ed25519KeyPair,
}

impl SigningSecret {
    /// The signing secret of a 32-byte seed (RFC 8032).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map(|pair| Self { pair })
            .map_err(|_| KeyError::Encoding)
    }

    /// A fresh random seed from the operating system.
    pub fn generate_seed() -> Option<[u8; 32]> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut seed).ok()?;
        Some(seed)
    }

    /// The public key that verifies this secret's signatures.
    pub fn public_key(&self) -> SigningKey {
        use ring::signature::KeyPair;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        SigningKey(bytes)
    }

    /// Signs `message` (Ed25519).
    pub fn sign(&self, message: &[u8]) -> Signature {
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(self.pair.sign(message).as_ref());
        Signature(bytes)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningSecret(public: {}, private: <redacted>)",
            self.public_key().to_base64url()
        )
    }
}

/// A client's private X25519 key, for tools and tests. `Debug` redacts it.
pub struct EncryptionSecret([u8; 32]);

impl EncryptionSecret {
    /// An encryption secret from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The public key: the clamped scalar times the base point (RFC 7748).
    pub fn public_key(&self) -> Result<EncryptionKey, KeyError> {
        EncryptionKey::from_bytes(curve25519_dalek::MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }
}

impl fmt::Debug for EncryptionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_public_key_matches_rfc_7748() {
        // RFC 7748 section 6.1, Alice's key pair.
        let secret: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c,
            0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let public = EncryptionSecret::from_bytes(secret).public_key().unwrap();
        let hex: String = public.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let secret = SigningSecret::from_seed(&[9; 32]).unwrap();
        assert!(format!("{secret:?}").contains("<redacted>"));
        assert!(format!("{:?}", EncryptionSecret::from_bytes([9; 32])).contains("<redacted>"));
    }
}
