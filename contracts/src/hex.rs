//! Lowercase hexadecimal, as signatures, tokens and key digests are
//! written on the wire.

/// `[0x00, 0x7f, 0xab]` → `"007fab"`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_become_two_lowercase_digits_each() {
        assert_eq!(super::encode(&[0x00, 0x7f, 0xab, 0xff]), "007fabff");
        assert_eq!(super::encode(&[]), "");
    }
}
