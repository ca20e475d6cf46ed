//! Git delta decoding: rebuilding an object from its base and a delta (`OFS_DELTA`/`REF_DELTA`
//! pack entries), checking every instruction against the sizes the delta declares.

/// What is wrong with a delta.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DeltaError {
    /// The delta does not fit its base or is malformed.
    #[error("corrupt delta: {0}")]
    Corrupt(&'static str),
    /// The delta declares a result larger than can be allocated.
    #[error("delta declares a result of {0} bytes, which cannot be allocated")]
    TooLarge(u64),
}

/// Decode one of the two size headers at the start of a delta: `(size, bytes used)`.
fn header_size(d: &[u8]) -> Result<(u64, usize), DeltaError> {
    let mut size = 0u64;
    for (i, byte) in d.iter().enumerate() {
        let shift = 7 * i as u32;
        if shift >= u64::BITS {
            return Err(DeltaError::Corrupt("size header too long"));
        }
        size |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((size, i + 1));
        }
    }
    Err(DeltaError::Corrupt("size header truncated"))
}

/// Apply `delta` to `base`, returning the resulting object.
pub(crate) fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let (base_size, n) = header_size(delta)?;
    if base_size != base.len() as u64 {
        return Err(DeltaError::Corrupt(
            "base size differs from the size the delta expects",
        ));
    }
    let (size, m) = header_size(&delta[n..])?;
    let mut data = &delta[n + m..];
    let capacity = usize::try_from(size).map_err(|_| DeltaError::TooLarge(size))?;
    let mut out = Vec::new();
    out.try_reserve_exact(capacity)
        .map_err(|_| DeltaError::TooLarge(size))?;
    let next = |data: &mut &[u8]| -> Result<u8, DeltaError> {
        let (&b, rest) = data
            .split_first()
            .ok_or(DeltaError::Corrupt("copy instruction truncated"))?;
        *data = rest;
        Ok(b)
    };
    while let Some((&cmd, rest)) = data.split_first() {
        data = rest;
        let bytes = if cmd & 0x80 != 0 {
            let mut offset = 0usize;
            let mut len = 0usize;
            for (bit, shift) in [(0x01, 0), (0x02, 8), (0x04, 16), (0x08, 24)] {
                if cmd & bit != 0 {
                    offset |= usize::from(next(&mut data)?) << shift;
                }
            }
            for (bit, shift) in [(0x10, 0), (0x20, 8), (0x40, 16)] {
                if cmd & bit != 0 {
                    len |= usize::from(next(&mut data)?) << shift;
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            let end = offset
                .checked_add(len)
                .ok_or(DeltaError::Corrupt("copy range overflows"))?;
            base.get(offset..end)
                .ok_or(DeltaError::Corrupt("copy range exceeds the base object"))?
        } else if cmd == 0 {
            return Err(DeltaError::Corrupt("reserved instruction 0"));
        } else {
            let len = usize::from(cmd);
            if data.len() < len {
                return Err(DeltaError::Corrupt("insert instruction truncated"));
            }
            let (bytes, rest) = data.split_at(len);
            data = rest;
            bytes
        };
        if out.len() + bytes.len() > capacity {
            return Err(DeltaError::Corrupt(
                "instructions produce more bytes than declared",
            ));
        }
        out.extend_from_slice(bytes);
    }
    if out.len() != capacity {
        return Err(DeltaError::Corrupt(
            "instructions produce fewer bytes than declared",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_inserts() {
        let base = b"hello world";
        // base size 11, result size 9: copy "hello" (offset 0, len 5), insert " you".
        let delta = [11, 9, 0x90, 5, 4, b' ', b'y', b'o', b'u'];
        assert_eq!(apply(base, &delta).expect("valid"), b"hello you");
    }

    #[test]
    fn rejects_bad_deltas() {
        let base = b"abc";
        assert!(apply(base, &[4, 1, 1, b'x']).is_err(), "wrong base size");
        assert!(apply(base, &[3, 2, 1, b'x']).is_err(), "too short");
        assert!(apply(base, &[3, 1, 2, b'x', b'y']).is_err(), "too long");
        assert!(
            apply(base, &[3, 3, 0x91, 2, 3]).is_err(),
            "copy beyond base"
        );
        assert!(apply(base, &[3, 1, 0]).is_err(), "reserved");
        assert!(apply(base, &[3, 1, 5, b'x']).is_err(), "truncated insert");
        assert_eq!(
            apply(
                base,
                &[3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
            ),
            Err(DeltaError::TooLarge(u64::MAX >> 1))
        );
    }
}
