//! Lowercase hexadecimal, as signatures, tokens and key digests are
//! written on the wire, and random bytes for ids and secrets.

use ring::rand::{SecureRandom as _, SystemRandom};

/// `[0x00, 0x7f, 0xab]` → `"007fab"`.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    write(bytes, &mut text).expect("writing to a String cannot fail");
    text
}

/// The same, written to `out` without a `String` of its own.
pub fn write(bytes: &[u8], out: &mut impl std::fmt::Write) -> std::fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.write_char(DIGITS[usize::from(byte >> 4)] as char)?;
        out.write_char(DIGITS[usize::from(byte & 0xf)] as char)?;
    }
    Ok(())
}

/// Hex of either case; `None` for odd lengths or other characters.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space where `plus_is_space`, as in
/// query strings); `None` for malformed escapes or text that is not UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape = text.get(i + 1..i + 3)?;
                out.extend(decode(escape)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source is available");
    bytes
}

/// `N` random bytes as hex: an id or a secret nobody can guess.
pub fn random<const N: usize>() -> String {
    encode(&random_bytes::<N>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_two_lowercase_digits_each_and_back() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(encode(&bytes), "007fabff");
        assert_eq!(encode(&[]), "");
        assert_eq!(decode("007FABff").unwrap(), bytes);
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
    }

    #[test]
    fn percent_escapes_decode_and_malformed_ones_are_refused() {
        assert_eq!(percent_decode("ab%2Fcd", false).as_deref(), Some("ab/cd"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff%fe", false), None, "not UTF-8");
    }

    #[test]
    fn random_values_differ_and_have_their_length() {
        assert_ne!(random::<16>(), random::<16>());
        assert_eq!(random::<12>().len(), 24);
    }
}
