//! A lane's cache of the device memory its dropped tensors held, by size
//! ([`super::tenant::Lane`]). When a piece does not fit, the sizes least
//! recently asked for or given back make room: a batch whose row count
//! changes leaves pieces of sizes no step asks for again, and a cache that
//! only refused new pieces once full would keep those and miss on every
//! size in use (a driver allocation and free per op).

use std::collections::HashMap;

/// Memory a [`Cache`] holds.
pub trait Piece {
    /// Its size in bytes.
    fn bytes(&self) -> usize;
}

impl Piece for cudarc::driver::CudaSlice<u8> {
    fn bytes(&self) -> usize {
        self.len()
    }
}

/// Pieces of memory by exact size, at most `limit` bytes in all.
pub struct Cache<P> {
    by_size: HashMap<usize, Kept<P>>,
    bytes: usize,
    limit: usize,
    clock: u64,
}

/// The pieces of one size, and when that size was last taken or kept.
struct Kept<P> {
    pieces: Vec<P>,
    used: u64,
}

impl<P: Piece> Cache<P> {
    /// An empty cache of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            by_size: HashMap::new(),
            bytes: 0,
            limit,
            clock: 0,
        }
    }

    /// A piece of exactly `len` bytes, if one is kept.
    pub fn take(&mut self, len: usize) -> Option<P> {
        self.clock += 1;
        let kept = self.by_size.get_mut(&len)?;
        let piece = kept.pieces.pop()?;
        kept.used = self.clock;
        if kept.pieces.is_empty() {
            self.by_size.remove(&len);
        }
        self.bytes -= len;
        Some(piece)
    }

    /// Keeps `piece`, first dropping pieces of the sizes least recently
    /// used (other than its own) until it fits. Returns what was dropped,
    /// `piece` itself when it cannot fit, for the caller to free outside
    /// any lock.
    pub fn keep(&mut self, piece: P) -> Vec<P> {
        let len = piece.bytes();
        if len > self.limit {
            return vec![piece];
        }
        let mut dropped = Vec::new();
        while self.bytes + len > self.limit {
            let oldest = self
                .by_size
                .iter()
                .filter(|(size, _)| **size != len)
                .min_by_key(|(_, kept)| kept.used)
                .map(|(size, _)| *size);
            let Some(size) = oldest else {
                // Only pieces of this size fill the cache.
                dropped.push(piece);
                return dropped;
            };
            let kept = self.by_size.get_mut(&size).expect("found above");
            if let Some(p) = kept.pieces.pop() {
                self.bytes -= size;
                dropped.push(p);
            }
            if kept.pieces.is_empty() {
                self.by_size.remove(&size);
            }
        }
        self.clock += 1;
        let kept = self.by_size.entry(len).or_insert(Kept {
            pieces: Vec::new(),
            used: 0,
        });
        kept.used = self.clock;
        kept.pieces.push(piece);
        self.bytes += len;
        dropped
    }

    /// Bytes kept.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Piece for Vec<u8> {
        fn bytes(&self) -> usize {
            self.len()
        }
    }

    fn piece(len: usize) -> Vec<u8> {
        vec![0; len]
    }

    #[test]
    fn a_kept_piece_is_handed_out_again_by_size() {
        let mut c = Cache::new(100);
        assert!(c.keep(piece(10)).is_empty());
        assert!(c.take(20).is_none());
        assert_eq!(c.take(10).map(|p| p.len()), Some(10));
        assert!(c.take(10).is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn a_full_cache_drops_the_sizes_least_recently_used() {
        let mut c = Cache::new(100);
        for len in [30, 20, 20] {
            assert!(c.keep(piece(len)).is_empty());
        }
        // The 30 was kept first: a 40 takes its room.
        let dropped = c.keep(piece(40));
        assert_eq!(dropped.iter().map(Vec::len).collect::<Vec<_>>(), [30]);
        assert_eq!(c.bytes(), 80);
        // Taking a 20 makes the 20s the most recently used: the 40 goes.
        assert!(c.take(20).is_some());
        let dropped = c.keep(piece(45));
        assert_eq!(dropped.iter().map(Vec::len).collect::<Vec<_>>(), [40]);
        assert_eq!(c.bytes(), 65);
        assert!(c.take(45).is_some() && c.take(20).is_some());
        assert!(c.take(40).is_none() && c.take(30).is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn pieces_too_big_or_crowded_out_by_their_own_size_are_given_back() {
        let mut c = Cache::new(100);
        assert_eq!(c.keep(piece(101)).len(), 1);
        for _ in 0..4 {
            assert!(c.keep(piece(25)).is_empty());
        }
        assert_eq!(c.keep(piece(25)).len(), 1);
        assert_eq!(c.bytes(), 100);
    }
}
