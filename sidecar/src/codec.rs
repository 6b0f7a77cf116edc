//! The primitive encoding of the state file: little-endian integers and floats, strings as a
//! `u32` length then UTF-8 bytes. Pure; the reader never panics on any input, it reports
//! [`DecodeError`] instead.

/// The format this build writes and reads; a larger one is refused as `future_version`.
pub const FORMAT_VERSION: u32 = 1;

/// Why a state file was not loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is truncated")]
    Truncated,
    #[error("the file is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("the file has format version {0}, newer than this sidecar's {FORMAT_VERSION}")]
    FutureVersion(u32),
}

/// Appends values to a byte buffer.
#[derive(Debug, Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    /// A length or count (saturated at `u32::MAX`; the limits keep real counts far below).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    pub fn f64s(&mut self, v: &[f64]) {
        self.len(v.len());
        for x in v {
            self.f64(*x);
        }
    }
    pub fn pairs<'a>(&mut self, pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>) {
        self.len(pairs.len());
        for (n, v) in pairs {
            self.str(n);
            self.str(v);
        }
    }
}

/// Reads values back from a byte slice.
#[derive(Debug)]
pub struct Dec<'a> {
    data: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Dec { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Corrupt(
                "a value runs past the end of its section",
            ));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// A count of items of at least `min_item` bytes each: refused when the rest of the data
    /// could not hold them, so a corrupt count never makes the reader allocate wildly.
    pub fn len(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.data.len() {
            return Err(DecodeError::Corrupt("a count exceeds the data left"));
        }
        Ok(n)
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.len(1)?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| DecodeError::Corrupt("a string is not UTF-8"))
    }
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(DecodeError::Corrupt("bad option tag")),
        }
    }
    pub fn f64s(&mut self) -> Result<Vec<f64>, DecodeError> {
        let n = self.len(8)?;
        (0..n).map(|_| self.f64()).collect()
    }
    pub fn pairs(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let n = self.len(8)?;
        (0..n)
            .map(|_| Ok((self.str()?.to_string(), self.str()?.to_string())))
            .collect()
    }
    /// A finite float (counters, buckets and counts must be; see the store).
    pub fn finite(&mut self) -> Result<f64, DecodeError> {
        let v = self.f64()?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(DecodeError::Corrupt("a cumulative value is not finite"))
        }
    }
}
