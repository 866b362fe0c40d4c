//! The parallel layer compressor: the tar stream cut into fixed-size blocks,
//! each compressed on its own by [`crate::compress::BlockCompressor`] (gzip
//! members by libdeflate, dictionary-primed zlib-rs blocks, or zstd frames),
//! joined in order, so the bytes do not depend on the number of threads;
//! the blocks in flight bounded in bytes, not per core.

#[allow(unused_imports)]
use super::*;
use crate::compress::{BlockCompressor, BlockOut, Codec, CrcCombiner, gzip_header, gzip_trailer};

/// Most bytes of blocks (input and output) and compressor state in flight,
/// whatever the core count: what keeps a 64-core runner's build under the
/// 100 MB bound.
pub(super) const IN_FLIGHT_BYTES: usize = 48 << 20;

/// A block of the tar stream and its compressed form; recycled through the
/// pipeline so at most `capacity` blocks ever exist.
#[derive(Default)]
pub(super) struct Block {
    seq: u64,
    last: bool,
    /// The previous block's last 32 KiB (empty for the first block and for
    /// codecs without a dictionary).
    dict: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    out: Option<BlockOut>,
}

/// The producer end: cuts the tar stream into blocks for the workers.
pub(super) struct BlockSink<'a> {
    work_tx: SyncSender<Block>,
    free_rx: Receiver<Block>,
    allocated: usize,
    capacity: usize,
    block_size: usize,
    current: Option<Block>,
    seq: u64,
    tail: Vec<u8>,
    keep_tail: bool,
    progress: Option<&'a Task>,
}

pub(super) fn pipeline_stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the compression pipeline stopped",
    )
}

impl BlockSink<'_> {
    /// A free block: a recycled one, a new one while under capacity, else
    /// wait for the writer to hand one back.
    fn free_block(&mut self) -> io::Result<Block> {
        match self.free_rx.try_recv() {
            Ok(b) => return Ok(b),
            Err(TryRecvError::Disconnected) => return Err(pipeline_stopped()),
            Err(TryRecvError::Empty) => {}
        }
        if self.allocated < self.capacity {
            self.allocated += 1;
            return Ok(Block {
                input: Vec::with_capacity(self.block_size),
                ..Block::default()
            });
        }
        self.free_rx.recv().map_err(|_| pipeline_stopped())
    }

    fn send(&mut self, last: bool) -> io::Result<()> {
        let mut b = match self.current.take() {
            Some(b) => b,
            None => self.free_block()?,
        };
        b.seq = self.seq;
        b.last = last;
        self.seq += 1;
        b.dict.clear();
        if self.keep_tail {
            b.dict.extend_from_slice(&self.tail);
            let keep = b.input.len().min(DICT_SIZE);
            self.tail.clear();
            self.tail
                .extend_from_slice(&b.input[b.input.len() - keep..]);
        }
        if let Some(p) = self.progress {
            p.inc(b.input.len() as u64);
        }
        self.work_tx.send(b).map_err(|_| pipeline_stopped())
    }

    /// Send what is left as the final block.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        self.send(true)
    }
}

impl Write for BlockSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .current
            .as_ref()
            .is_some_and(|b| b.input.len() >= self.block_size)
        {
            // Only sent once more data comes, so the last block is never empty
            // unless the whole stream is.
            self.send(false)?;
        }
        if self.current.is_none() {
            self.current = Some(self.free_block()?);
        }
        let b = self.current.as_mut().expect("a current block");
        let n = buf.len().min(self.block_size - b.input.len());
        b.input.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn compress_worker(
    codec: Codec,
    work: &Mutex<Receiver<Block>>,
    done: &SyncSender<Result<Block, String>>,
) {
    let mut c = match BlockCompressor::new(codec) {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        let next = work.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut block) = next else { return };
        // The bytes depend on the block's dictionary, input and position
        // alone (incompressible blocks are stored, by their bytes alone).
        let res = c
            .compress(&block.dict, &block.input, block.last, &mut block.output)
            .map(|out| {
                block.out = Some(out);
                block
            })
            .map_err(|e| e.to_string());
        if done.send(res).is_err() {
            return;
        }
    }
}

pub(super) enum WriterError {
    Output(io::Error),
    Compress(String),
    Incomplete,
}

/// Writes the stream: the codec's header, blocks in order, its trailer
/// (for one dictionary-primed gzip member, the combined CRC32 and size).
/// Hands each block back to the producer once written.
pub(super) fn ordered_writer<W: Write>(
    mut out: W,
    codec: Codec,
    done: Receiver<Result<Block, String>>,
    free: SyncSender<Block>,
) -> Result<W, WriterError> {
    out.write_all(gzip_header(codec))
        .map_err(WriterError::Output)?;
    let mut pending: BTreeMap<u64, Block> = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = CrcCombiner::new();
    let mut finished = false;
    for res in done {
        let block = res.map_err(WriterError::Compress)?;
        pending.insert(block.seq, block);
        while let Some(mut b) = pending.remove(&next) {
            out.write_all(&b.output).map_err(WriterError::Output)?;
            crc.push(b.out.take().expect("a compressed block"));
            finished |= b.last;
            next += 1;
            b.input.clear();
            b.output.clear();
            // The producer may be done and gone; then the block is dropped.
            let _ = free.try_send(b);
        }
    }
    if !finished {
        return Err(WriterError::Incomplete);
    }
    out.write_all(&gzip_trailer(codec, crc.sum(), crc.len()))
        .map_err(WriterError::Output)?;
    out.flush().map_err(WriterError::Output)?;
    Ok(out)
}

/// How many worker threads and blocks in flight: at most one worker per
/// core, two blocks per worker, and all of it (each block's input and
/// output, each worker's compressor state) within [`IN_FLIGHT_BYTES`].
pub(super) fn pipeline_shape(codec: Codec, block_size: usize, cores: usize) -> (usize, usize) {
    // A compressor's tables: libdeflate and zlib under 1 MiB; zstd's grow
    // with the level (hash and chain tables sized to a 1 MiB block).
    let state = match codec {
        Codec::Zstd(l) if l >= 16 => 24 << 20,
        Codec::Zstd(l) if l >= 10 => 12 << 20,
        Codec::Zstd(_) => 6 << 20,
        Codec::Libdeflate(_) | Codec::Zlib(_) => 1 << 20,
    };
    let per_block = 2 * block_size + block_size / 8 + DICT_SIZE;
    let per_worker = state + 2 * per_block;
    let threads = cores.clamp(1, (IN_FLIGHT_BYTES / per_worker).max(1));
    (threads, 2 * threads)
}

/// The parallel compression pipeline around `produce`, which writes the
/// tar stream into the sink and returns its entry count.
pub(super) fn compress<W, F>(
    name: &str,
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
    produce: F,
) -> Result<(LayerStats, W), LayerError>
where
    W: Write + Send,
    F: FnOnce(&mut DigestWriter<BlockSink<'_>>) -> Result<usize, TarError>,
{
    let codec = opts.codec;
    let (threads, in_flight) = pipeline_shape(codec, opts.block_size, opts.threads());
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<Block>(in_flight);
        let (done_tx, done_rx) = mpsc::sync_channel::<Result<Block, String>>(in_flight);
        let (free_tx, free_rx) = mpsc::sync_channel::<Block>(in_flight);
        // Workers own the receiver (no clone kept here) so that, once they
        // stop, a blocked producer sees a closed channel instead of hanging.
        let work_rx = Arc::new(Mutex::new(work_rx));
        for _ in 0..threads {
            let rx = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            scope.spawn(move || compress_worker(codec, &rx, &tx));
        }
        drop(work_rx);
        drop(done_tx);
        let writer = scope.spawn(move || ordered_writer(out, codec, done_rx, free_tx));

        let mut sink = DigestWriter::new(BlockSink {
            work_tx,
            free_rx,
            allocated: 0,
            capacity: in_flight,
            block_size: opts.block_size,
            current: None,
            seq: 0,
            tail: Vec::with_capacity(DICT_SIZE),
            keep_tail: codec.uses_dictionary(),
            progress,
        });
        let produced = produce(&mut sink).and_then(|entries| {
            sink.get_mut().finish().map_err(TarError::Output)?;
            Ok(entries)
        });
        let stats = produced
            .as_ref()
            .ok()
            .map(|&entries| stats_of(&sink, entries));
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (produced, written) {
            // A read error is the cause; the writer then only saw a short stream.
            (Err(e @ TarError::Source(_)), _) => Err(e.into_layer_error(name)),
            (_, Err(WriterError::Output(e))) => Err(LayerError::Write {
                layer: name.to_owned(),
                source: e,
            }),
            (_, Err(WriterError::Compress(reason))) => Err(LayerError::Compress {
                layer: name.to_owned(),
                reason,
            }),
            (_, Err(WriterError::Incomplete)) | (Err(_), Ok(_)) => Err(LayerError::Compress {
                layer: name.to_owned(),
                reason: "the compression pipeline stopped early".into(),
            }),
            (Ok(_), Ok(out)) => Ok((stats.expect("stats of a finished tar"), out)),
        }
    })
}
