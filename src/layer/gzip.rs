//! The parallel gzip: blocks deflated on their own (primed with the previous
//! block's tail), joined into one gzip member in order, so the bytes do not
//! depend on the number of threads.

#[allow(unused_imports)]
use super::*;
// ---------------------------------------------------------------------------
// parallel gzip

/// A block of the tar stream and its compressed form; recycled through the
/// pipeline so at most `capacity` blocks ever exist.
#[derive(Default)]
pub(super) struct Block {
    seq: u64,
    last: bool,
    /// The previous block's last 32 KiB (empty for the first block).
    dict: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    crc: Crc,
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
        b.dict.extend_from_slice(&self.tail);
        let keep = b.input.len().min(DICT_SIZE);
        self.tail.clear();
        self.tail
            .extend_from_slice(&b.input[b.input.len() - keep..]);
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
    level: Compression,
    work: &Mutex<Receiver<Block>>,
    done: &SyncSender<Result<Block, String>>,
) {
    loop {
        let next = work.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut block) = next else { return };
        // Already-compressed data (images, fonts, phx.digest's .gz copies)
        // only costs time to deflate again: store it. The choice depends on
        // the block's bytes alone, so the output stays deterministic.
        let level = if looks_incompressible(&block.input) {
            Compression::none()
        } else {
            level
        };
        // A fresh compressor per block: a reset one carries state over from
        // the blocks this worker happened to compress before (measured: the
        // bytes then depend on how blocks were spread over threads).
        let compressor = &mut Compress::new(level, false);
        let res = compress_block(compressor, &mut block).map(|()| block);
        if done.send(res).is_err() {
            return;
        }
    }
}

/// Whether a block's bytes are so evenly spread (Shannon entropy of the byte
/// histogram above 7.97 bits per byte) that deflate cannot shrink it: the
/// signature of compressed or encrypted data. Text, code and BEAM files are
/// far below (typically 4.5–6.5).
pub(super) fn looks_incompressible(bytes: &[u8]) -> bool {
    if bytes.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.97
}

/// Raw deflate of one block: primed with the dictionary, ending with a
/// sync flush (byte-aligned, not final) or, for the last block, a finish.
pub(super) fn compress_block(c: &mut Compress, b: &mut Block) -> Result<(), String> {
    c.reset();
    if !b.dict.is_empty() {
        c.set_dictionary(&b.dict).map_err(|e| e.to_string())?;
    }
    b.crc.reset();
    b.crc.update(&b.input);
    b.output.clear();
    b.output.reserve(b.input.len() + b.input.len() / 16 + 1024);
    let flush = if b.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut consumed = 0;
    loop {
        let before = c.total_in();
        let status = c
            .compress_vec(&b.input[consumed..], &mut b.output, flush)
            .map_err(|e| e.to_string())?;
        consumed += (c.total_in() - before) as usize;
        let done = if b.last {
            status == Status::StreamEnd
        } else {
            consumed == b.input.len() && b.output.len() < b.output.capacity()
        };
        if done {
            return Ok(());
        }
        b.output.reserve(64 * 1024);
    }
}

pub(super) enum WriterError {
    Output(io::Error),
    Compress(String),
    Incomplete,
}

/// Writes the gzip member: header, blocks in order, trailer (combined CRC32
/// and size). Hands each block back to the producer once written.
pub(super) fn ordered_writer<W: Write>(
    mut out: W,
    done: Receiver<Result<Block, String>>,
    free: SyncSender<Block>,
) -> Result<W, WriterError> {
    out.write_all(&GZIP_HEADER).map_err(WriterError::Output)?;
    let mut pending: BTreeMap<u64, Block> = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = Crc::new();
    let mut size = 0u64;
    let mut finished = false;
    for res in done {
        let block = res.map_err(WriterError::Compress)?;
        pending.insert(block.seq, block);
        while let Some(mut b) = pending.remove(&next) {
            out.write_all(&b.output).map_err(WriterError::Output)?;
            crc.combine(&b.crc);
            size += b.input.len() as u64;
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
    out.write_all(&crc.sum().to_le_bytes())
        .map_err(WriterError::Output)?;
    out.write_all(&(size as u32).to_le_bytes())
        .map_err(WriterError::Output)?;
    out.flush().map_err(WriterError::Output)?;
    Ok(out)
}

/// The parallel gzip pipeline around `produce`, which writes the tar
/// stream into the sink and returns its entry count.
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
    let threads = opts.threads();
    let in_flight = 2 * threads;
    let level = Compression::new(opts.level);
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
            scope.spawn(move || compress_worker(level, &rx, &tx));
        }
        drop(work_rx);
        drop(done_tx);
        let writer = scope.spawn(move || ordered_writer(out, done_rx, free_tx));

        let mut sink = DigestWriter::new(BlockSink {
            work_tx,
            free_rx,
            allocated: 0,
            capacity: in_flight,
            block_size: opts.block_size,
            current: None,
            seq: 0,
            tail: Vec::with_capacity(DICT_SIZE),
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
