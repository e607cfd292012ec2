//! The strict I-JSON reader and RFC 8785 output: never a panic, and the
//! canonical form of anything accepted reads back to the same canonical form.
#![no_main]

use fedid_domain::envelope::canonical;
use fedid_domain::json::parse_strict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = parse_strict(data) {
        let once = canonical(&value);
        let reread = parse_strict(&once).expect("canonical output is strict JSON");
        assert_eq!(canonical(&reread), once);
    }
});
