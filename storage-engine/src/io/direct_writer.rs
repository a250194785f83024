//! A file written front to back from a blocking thread with O_DIRECT: the Parquet files a node
//! writes (flushes, imports, compaction). Their bytes go from this writer's aligned buffer to
//! the disk, not through the page cache: queries read them with O_DIRECT, so a cached copy
//! would cost a copy per byte written and memory nobody reads. Where the filesystem refuses
//! O_DIRECT (tmpfs), the file is an ordinary buffered one; the bytes on disk are the same.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct writes (offsets, lengths and memory).
const ALIGN: usize = 4096;
/// Bytes gathered before one write.
const BUFFER_BYTES: usize = 1 << 20;

pub struct DirectFileWriter {
    file: File,
    direct: bool,
    /// Holds an aligned window of `BUFFER_BYTES` at `start`.
    storage: Vec<u8>,
    start: usize,
    /// Bytes waiting in the window.
    filled: usize,
    /// Bytes of the file written so far (a multiple of `ALIGN` while direct).
    written: u64,
}

impl DirectFileWriter {
    /// Creates (or truncates) `path` for writing.
    pub fn create(path: &Path) -> io::Result<DirectFileWriter> {
        let open = |flags| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = match open(libc::O_DIRECT) {
            Ok(file) => (file, true),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(error) => return Err(error),
        };
        let storage = vec![0u8; BUFFER_BYTES + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Ok(DirectFileWriter {
            file,
            direct,
            storage,
            start,
            filled: 0,
            written: 0,
        })
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + BUFFER_BYTES]
    }

    fn write_window(&mut self, length: usize) -> io::Result<()> {
        let at = self.written;
        let start = self.start;
        self.file
            .write_all_at(&self.storage[start..start + length], at)?;
        self.written += length as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is buffered; the file's length is then exactly the bytes written. Not yet
    /// durable: see `sync_all`.
    pub fn finish(&mut self) -> io::Result<()> {
        let tail = self.filled;
        if tail > 0 {
            if self.direct {
                // A direct write is whole blocks: the last one padded with zeros, then the
                // file cut back to its length.
                let padded = tail.next_multiple_of(ALIGN);
                self.window()[tail..padded].fill(0);
                self.write_window(padded)?;
                self.written -= (padded - tail) as u64;
                self.file.set_len(self.written)?;
            } else {
                self.write_window(tail)?;
            }
        }
        Ok(())
    }

    /// Makes what `finish` wrote durable, data and metadata.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }
}

impl Write for DirectFileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(BUFFER_BYTES - self.filled);
        let filled = self.filled;
        self.window()[filled..filled + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        if self.filled == BUFFER_BYTES {
            self.write_window(BUFFER_BYTES)?;
        }
        Ok(n)
    }

    /// Bytes reach the file when the buffer fills and at `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_in_any_pieces_read_back_exactly() {
        let dir = std::env::temp_dir().join(format!("tessera-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for total in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            BUFFER_BYTES,
            BUFFER_BYTES + 4097,
            3 << 20,
        ] {
            let path = dir.join(format!("f{total}"));
            std::fs::write(&path, vec![7u8; 5 << 20]).unwrap();
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let mut writer = DirectFileWriter::create(&path).unwrap();
            for piece in data.chunks(777_777) {
                writer.write_all(piece).unwrap();
            }
            writer.finish().unwrap();
            writer.sync_all().unwrap();
            assert_eq!(writer.bytes_written(), total as u64);
            assert_eq!(std::fs::read(&path).unwrap(), data, "{total} bytes");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
