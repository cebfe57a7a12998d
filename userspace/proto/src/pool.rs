//! A pool of byte buffers, so that steady-state message traffic allocates nothing: queued
//! and delivered messages borrow buffers from it, and the application may hand delivered
//! buffers back (`Server::recycle`, `Client::recycle`).

/// Buffers larger than this are not kept (reassembled large messages).
pub const MAX_POOLED_CAPACITY: usize = 4096;

/// Buffers kept at most.
pub const MAX_POOLED: usize = 4096;

/// A free list of cleared `Vec<u8>`s.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
}

impl BufPool {
    /// An empty buffer, reused if one is free.
    pub fn get(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Returns a buffer to the pool (dropped if the pool is full or the buffer is large).
    pub fn put(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0
            || buf.capacity() > MAX_POOLED_CAPACITY
            || self.free.len() >= MAX_POOLED
        {
            return;
        }
        buf.clear();
        self.free.push(buf);
    }

    /// Buffers currently free.
    #[must_use]
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no buffer is free.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}
