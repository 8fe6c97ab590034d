//! How the client's recent streams closed, once they left the table of open ones. RFC 9113
//! §5.1 answers a frame on a closed stream by that: frames crossing a RST_STREAM the server
//! sent are ignored (they were in flight), any other DATA or HEADERS is a stream error, and a
//! HEADERS on an id the client skipped is a connection error (§5.1.1). Two bits per stream for
//! the last 64 client stream ids: no allocation, and a fixed 20 bytes per connection.

/// Client streams remembered, back from the highest id opened.
const SPAN: u32 = 64;

#[derive(Debug, Default)]
pub struct Recent {
    /// The highest stream id the client opened (0: none yet).
    last: u32,
    /// Bit i: stream `last - 2i` was opened.
    opened: u64,
    /// Bit i: the server reset stream `last - 2i`.
    reset: u64,
}

/// What became of a stream no longer open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Past {
    /// Never opened: the client skipped the id (which closed it, §5.1.1).
    Skipped,
    /// The server sent RST_STREAM (on a skipped id too, for DATA on it): the client's frames
    /// may have crossed it.
    ResetHere,
    /// Ended both ways, or reset by the client.
    Closed,
    /// Too far back to know.
    Forgotten,
}

impl Recent {
    /// The highest stream id the client opened (0: none yet).
    pub fn last(&self) -> u32 {
        self.last
    }

    /// The client opened `id`, above every stream before it (client ids are odd).
    pub fn open(&mut self, id: u32) {
        if id <= self.last {
            return;
        }
        let shift = if self.last == 0 {
            SPAN
        } else {
            (id - self.last) / 2
        };
        if shift >= SPAN {
            self.opened = 0;
            self.reset = 0;
        } else {
            self.opened <<= shift;
            self.reset <<= shift;
        }
        self.opened |= 1;
        self.last = id;
    }

    /// The server reset `id`.
    pub fn reset_here(&mut self, id: u32) {
        if let Some(bit) = self.bit(id) {
            self.reset |= bit;
        }
    }

    /// What became of `id`, an id at or below the highest opened.
    pub fn past(&self, id: u32) -> Past {
        match self.bit(id) {
            None => Past::Forgotten,
            Some(b) if self.reset & b != 0 => Past::ResetHere,
            Some(b) if self.opened & b == 0 => Past::Skipped,
            Some(_) => Past::Closed,
        }
    }

    fn bit(&self, id: u32) -> Option<u64> {
        if id > self.last || id.is_multiple_of(2) {
            return None;
        }
        let i = (self.last - id) / 2;
        (i < SPAN).then(|| 1 << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_remembered_by_how_they_closed() {
        let mut r = Recent::default();
        r.open(1);
        r.open(3);
        r.open(7);
        r.reset_here(3);
        assert_eq!(r.past(1), Past::Closed);
        assert_eq!(r.past(3), Past::ResetHere);
        assert_eq!(r.past(5), Past::Skipped);
        assert_eq!(r.past(7), Past::Closed);
        // A new stream moves what is known of the old ones along with it.
        r.open(9);
        assert_eq!(r.past(3), Past::ResetHere);
        assert_eq!(r.past(5), Past::Skipped);
        assert_eq!(r.past(9), Past::Closed);
        // 64 ids on, stream 1 is out of reach and 7 is the oldest remembered.
        r.open(7 + 2 * 63);
        assert_eq!(r.past(1), Past::Forgotten);
        assert_eq!(r.past(7), Past::Closed);
        assert_eq!(r.past(9), Past::Closed);
        assert_eq!(r.past(11), Past::Skipped);
        // A jump past the span forgets everything before it.
        r.open(1001);
        assert_eq!(r.past(7 + 2 * 63), Past::Forgotten);
        assert_eq!(r.past(999), Past::Skipped);
        assert_eq!(r.past(1001), Past::Closed);
    }
}
