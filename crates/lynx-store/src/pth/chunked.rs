//! A growable sequence stored in chunks of at most [`CHUNK`] elements, so that no single
//! allocation grows with the input: a hostile pickle can make many objects, or one huge
//! list, yet each allocation stays small and the total stays proportional to its size.

use std::ops::{Index, IndexMut};

/// Elements per chunk.
const CHUNK: usize = 4096;

/// A `Vec` in chunks of [`CHUNK`] elements (the last one grows as a `Vec` does).
#[derive(Debug, Clone)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`; returns its index.
    pub(crate) fn push(&mut self, value: T) -> usize {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(4.min(CHUNK));
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        self.len - 1
    }

    /// Appends every element of `values`.
    pub(crate) fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        for v in values {
            self.push(v);
        }
    }

    /// The element at `i`, if any.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK))
    }

    /// Every element, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut c = Chunked::default();
        c.extend(iter);
        c
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_vec() {
        let c: Chunked<usize> = (0..10_000).collect();
        assert_eq!(c.len(), 10_000);
        assert_eq!(c[4096], 4096);
        assert_eq!(c.get(9_999), Some(&9_999));
        assert_eq!(c.get(10_000), None);
        assert!(c.iter().copied().eq(0..10_000));
        assert!(c.chunks.iter().all(|c| c.capacity() <= CHUNK));
    }
}
