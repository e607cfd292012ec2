//! Binary values on the wire (PROTOCOL.md section 2): emitted as unpadded
//! base64url; read leniently in exactly the documented ways and no others.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(false);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// Unpadded base64url, the only form fedid emits.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE.encode(bytes)
}

/// Decodes base64url or standard base64, optionally correctly padded.
/// Mixed alphabets, wrong padding and non-zero trailing bits are refused.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let url = text.contains(['-', '_']);
    let std = text.contains(['+', '/']);
    let unpadded = text.trim_end_matches('=');
    let padding = text.len() - unpadded.len();
    if padding > 0 && (!text.len().is_multiple_of(4) || padding > 2) {
        return None;
    }
    match (url, std) {
        (true, true) => None,
        (false, true) => STANDARD.decode(text).ok(),
        _ => URL_SAFE.decode(text).ok(),
    }
}

/// Decodes exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_padding() {
        let encoded = encode(&[0xfb, 0xff, 0x01]);
        assert_eq!(encoded, "-_8B");
        assert_eq!(decode(&encoded), Some(vec![0xfb, 0xff, 0x01]));
    }

    #[test]
    fn accepts_standard_alphabet_and_correct_padding() {
        assert_eq!(decode("+/8="), decode("-_8"));
        assert_eq!(decode("+/8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode("AA=="), Some(vec![0]));
        assert_eq!(decode("AA"), Some(vec![0]));
    }

    #[test]
    fn refuses_mixed_alphabets_bad_padding_and_trailing_bits() {
        assert_eq!(decode("-/8="), None);
        assert_eq!(decode("AA="), None);
        assert_eq!(decode("AA==="), None);
        assert_eq!(decode("AB"), None, "non-zero trailing bits");
        assert_eq!(decode("not base64 !!"), None);
        assert_eq!(decode("A"), None);
    }
}
