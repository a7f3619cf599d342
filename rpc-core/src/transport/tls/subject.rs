//! The subject of a verified certificate, as text: its distinguished name's attributes in
//! the RFC 4514 style (`CN=alice,O=Acme`), read from the DER that webpki hands out.
//!
//! The certificate has been verified before this runs, but its bytes came from a peer:
//! anything this does not understand is skipped, nothing panics.

/// The attributes named in the text, by their object identifiers' encodings (2.5.4.x).
const ATTRIBUTES: [(&[u8], &str); 9] = [
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x05], "SERIALNUMBER"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19], "DC"),
];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// The string types a name's values are written in, read as text.
const STRINGS: [u8; 4] =
    [0x0c /* UTF8 */, 0x13 /* Printable */, 0x14 /* Teletex */, 0x16 /* IA5 */];

/// One DER element at the start of `input`: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let (length, rest) = rest.split_at(bytes);
        (length.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)), rest)
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// The subject `name` (the contents of the `Name` SEQUENCE, as webpki's `subject()` gives
/// it) as text: the attributes in the order written, most significant first, `,` between
/// them (`+` within one multi-valued component); attributes of other types are left out.
/// `None` when nothing could be read.
pub(super) fn subject_text(mut name: &[u8]) -> Option<String> {
    let mut components = Vec::new();
    while !name.is_empty() {
        let (tag, set, rest) = element(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        let mut values = Vec::new();
        let mut set = set;
        while !set.is_empty() {
            let (tag, pair, rest) = element(set)?;
            set = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = element(pair)?;
            let (value_tag, value, _) = element(value)?;
            let label = ATTRIBUTES.iter().find(|(known, _)| *known == oid).map(|(_, label)| *label);
            if let (OID, Some(label), true) = (tag, label, STRINGS.contains(&value_tag)) {
                values.push(format!("{label}={}", escape(&String::from_utf8_lossy(value))));
            }
        }
        if !values.is_empty() {
            components.push(values.join("+"));
        }
    }
    // Certificates list the most significant component first; RFC 4514 text reverses that.
    components.reverse();
    (!components.is_empty()).then(|| components.join(","))
}

/// A value with RFC 4514's special characters escaped.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let leading = i == 0 && (c == ' ' || c == '#');
        let trailing = i + 1 == value.chars().count() && c == ' ';
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') || leading || trailing {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Name`'s contents: one component per (OID, UTF8String value).
    fn name(components: &[(&[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (oid, value) in components {
            let mut pair = vec![OID, oid.len() as u8];
            pair.extend_from_slice(oid);
            pair.extend([0x0c, value.len() as u8]);
            pair.extend_from_slice(value.as_bytes());
            let mut sequence = vec![SEQUENCE, pair.len() as u8];
            sequence.extend(pair);
            out.extend([SET, sequence.len() as u8]);
            out.extend(sequence);
        }
        out
    }

    #[test]
    fn a_subject_reads_most_significant_last_with_specials_escaped() {
        let der = name(&[
            (&[0x55, 0x04, 0x06], "FR"),
            (&[0x55, 0x04, 0x0a], "Acme, Inc"),
            (&[0x55, 0x04, 0x03], "alice"),
        ]);
        assert_eq!(subject_text(&der).as_deref(), Some("CN=alice,O=Acme\\, Inc,C=FR"));
    }

    #[test]
    fn unknown_attributes_are_left_out_and_broken_input_reads_as_nothing() {
        let der = name(&[(&[0x2a, 0x03], "x"), (&[0x55, 0x04, 0x03], "bob")]);
        assert_eq!(subject_text(&der).as_deref(), Some("CN=bob"));
        assert_eq!(subject_text(&der[..der.len() - 1]), None, "cut short");
        assert_eq!(subject_text(&[0x31, 0x84, 0xff, 0xff, 0xff, 0xff]), None, "a length past the end");
        assert_eq!(subject_text(&[]), None);
    }
}
