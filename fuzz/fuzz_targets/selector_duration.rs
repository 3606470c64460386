//! Selectors and durations: whatever parses prints as something that parses
//! to the same value.
#![no_main]

use lanyard_core::{Selector, format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(selector) = Selector::parse(text) {
        let printed = selector.to_string();
        assert_eq!(Selector::parse(&printed).unwrap(), selector, "{text:?} printed as {printed:?}");
    }
    if let Ok(duration) = parse_duration(text) {
        let printed = format_duration(duration);
        assert_eq!(parse_duration(&printed).unwrap(), duration, "{text:?} printed as {printed:?}");
    }
});
