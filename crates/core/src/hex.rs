//! Lower-case hexadecimal, the only spelling Lanyard writes or accepts.

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly `N` bytes from `2N` lower-case hex digits.
pub fn decode_lower<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(bytes in prop::array::uniform16(any::<u8>())) {
            prop_assert_eq!(super::decode_lower::<16>(&super::encode(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn refuses_upper_case_and_wrong_length() {
        assert_eq!(super::decode_lower::<1>("AB"), None);
        assert_eq!(super::decode_lower::<1>("abc"), None);
        assert_eq!(super::decode_lower::<1>("ab"), Some([0xab]));
    }
}
