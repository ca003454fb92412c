//! Building and reading netlink attributes (TLVs).

/// A buffer of netlink messages under construction.
#[derive(Debug, Default, Clone)]
pub struct MsgWriter {
    pub buf: Vec<u8>,
    /// The first attribute too long for its u16 length field (type, bytes):
    /// the buffer must not be sent ([`MsgWriter::check`]).
    overflow: Option<(u16, usize)>,
}

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

impl MsgWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Start a message; returns its offset for [`MsgWriter::end`].
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        start
    }

    /// Finish the message started at `start`: write its length.
    pub fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Raw bytes (a family header), padded to 4 bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Err((type, bytes)) when an attribute did not fit its length field.
    pub fn check(&self) -> Result<(), (u16, usize)> {
        self.overflow.map_or(Ok(()), Err)
    }

    fn attr_len(&mut self, ty: u16, len: usize) -> u16 {
        u16::try_from(len).unwrap_or_else(|_| {
            self.overflow.get_or_insert((ty, len));
            u16::MAX
        })
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = self.attr_len(ty, 4 + data.len());
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// A big-endian u32 (nf_tables uses network order for its integers).
    pub fn u32be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn u64be(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A host-order u32 (rtnetlink).
    pub fn u32ne(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    pub fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data);
    }

    /// Open a nested attribute; returns its offset for [`MsgWriter::nest_end`].
    pub fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn nest_end(&mut self, start: usize) {
        let ty = u16::from_ne_bytes([self.buf[start + 2], self.buf[start + 3]]) & NLA_TYPE_MASK;
        let len = self.attr_len(ty, self.buf.len() - start);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Iterator over the attributes in `data`: (type without flags, value).
pub struct Attrs<'a> {
    data: &'a [u8],
}

pub fn attrs(data: &[u8]) -> Attrs<'_> {
    Attrs { data }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.data[0], self.data[1]]) as usize;
        let ty = u16::from_ne_bytes([self.data[2], self.data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.data.len() {
            return None;
        }
        let value = &self.data[4..len];
        let next = ((len + 3) & !3).min(self.data.len());
        self.data = &self.data[next..];
        Some((ty, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip() {
        let mut w = MsgWriter::new();
        let m = w.begin(0x0a06, 1, 7);
        w.raw(&[1, 0, 0, 0]);
        w.str(1, "cgtproxy");
        let n = w.nest(4);
        w.u32be(1, 0xdead_beef);
        w.u8(2, 9);
        w.nest_end(n);
        w.end(m);
        assert_eq!(w.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(w.buf[0..4].try_into().unwrap()) as usize, w.len());
        let body = &w.buf[20..];
        let list: Vec<_> = attrs(body).collect();
        assert_eq!(list[0], (1, &b"cgtproxy\0"[..]));
        assert_eq!(list[1].0, 4);
        let inner: Vec<_> = attrs(list[1].1).collect();
        assert_eq!(inner, [(1, &[0xde, 0xad, 0xbe, 0xef][..]), (2, &[9][..])]);
        assert_eq!(w.check(), Ok(()));
    }

    #[test]
    fn oversized_attributes_are_reported_not_truncated() {
        let mut w = MsgWriter::new();
        w.attr(3, &vec![0; 70_000]);
        assert_eq!(w.check(), Err((3, 70_004)));
        let mut w = MsgWriter::new();
        let n = w.nest(5);
        for _ in 0..20 {
            w.attr(1, &[0; 4000]);
        }
        w.nest_end(n);
        assert_eq!(w.check(), Err((5, 80_084)));
    }
}
