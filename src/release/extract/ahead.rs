//! Reading ahead on a thread of its own: a reader whose bytes are produced
//! (inflated) by another thread a few chunks in advance, so inflating a
//! tarball overlaps with parsing it and writing the spool.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::Scope;

/// Bytes per chunk handed over.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight (so at most about 1 MiB ahead).
const AHEAD: usize = 4;

/// The consuming end: reads what the producing thread sends, in order; an
/// error of the source comes out where it happened in the stream.
pub(super) struct ReadAhead {
    chunks: Receiver<io::Result<Vec<u8>>>,
    spent: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    /// Start reading `source` on a thread of `scope`. The thread ends at the
    /// source's end or error, or when this reader is dropped.
    pub(super) fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope Scope<'scope, '_>,
        mut source: R,
    ) -> ReadAhead {
        let (tx, chunks) = sync_channel::<io::Result<Vec<u8>>>(AHEAD);
        let (spent, recycled) = sync_channel::<Vec<u8>>(AHEAD + 2);
        scope.spawn(move || {
            loop {
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let mut n = 0;
                let res = loop {
                    match source.read(&mut buf[n..]) {
                        Ok(0) => break Ok(()),
                        Ok(k) => {
                            n += k;
                            if n == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(n);
                let end = n == 0;
                if n > 0 && tx.send(Ok(buf)).is_err() {
                    return; // the reader is gone
                }
                match res {
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    Ok(()) if end => {
                        let _ = tx.send(Ok(Vec::new()));
                        return;
                    }
                    Ok(()) => {}
                }
            }
        });
        ReadAhead {
            chunks,
            spent,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            let next = match self.chunks.recv() {
                Ok(c) => c?,
                Err(_) => {
                    return Err(io::Error::other("the reading thread ended unexpectedly"));
                }
            };
            if next.is_empty() {
                self.done = true;
                return Ok(0);
            }
            let old = std::mem::replace(&mut self.cur, next);
            let _ = self.spent.try_send(old);
            self.pos = 0;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that gives `good` bytes in odd-sized reads, then fails.
    struct Flaky {
        left: usize,
        fail: bool,
    }

    impl Read for Flaky {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return if self.fail {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "corrupt deflate data",
                    ))
                } else {
                    Ok(0)
                };
            }
            let n = out.len().min(self.left).min(7777);
            for (i, b) in out[..n].iter_mut().enumerate() {
                *b = ((self.left - i) % 251) as u8;
            }
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn bytes_come_through_in_order_and_an_error_where_it_happened() {
        let len = 3 * CHUNK + 12345;
        let mut want = Vec::new();
        Flaky {
            left: len,
            fail: false,
        }
        .read_to_end(&mut want)
        .unwrap();
        std::thread::scope(|s| {
            let mut got = Vec::new();
            ReadAhead::spawn(
                s,
                Flaky {
                    left: len,
                    fail: false,
                },
            )
            .read_to_end(&mut got)
            .unwrap();
            assert!(got == want);

            let mut r = ReadAhead::spawn(
                s,
                Flaky {
                    left: len,
                    fail: true,
                },
            );
            let mut got = Vec::new();
            let err = r.read_to_end(&mut got).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(got.len() <= len && want.starts_with(&got));

            // Dropped half-way: the thread ends, the scope does not hang.
            let mut r = ReadAhead::spawn(
                s,
                Flaky {
                    left: 100 * CHUNK,
                    fail: false,
                },
            );
            let mut some = [0u8; 1000];
            r.read_exact(&mut some).unwrap();
            drop(r);
        });
    }
}
