//! One core's write-ahead log: segment files of commit groups of records, written with O_DIRECT
//! and made durable by one fdatasync per group (group commit).
//!
//! On disk, `<data>/_wal/<log id>/<segment number, 20 digits>.wal`, each file preallocated:
//! - block 0: the segment header: magic, format version, segment number, a random salt, the log
//!   id, CRC-32C. The salt enters every checksum in the segment, so bytes left over from another
//!   segment, or forged inside a client's payload, never pass for a record of this one.
//! - from block 1: commit groups, each starting on a block boundary: a group header (magic,
//!   record count, body length, group number, CRC-32C of the header with salt and offset), then
//!   the records back to back (payload length, CRC-32C of salt, offset, length and payload, the
//!   payload), then zeros to the next block. Group numbers count up by one across segments.
//!
//! A writer has one group in flight at a time: records that arrive while a group is written and
//! fsynced form the next group, so the commit interval follows the load by itself. A record is
//! acknowledged only after its group's fsync. A group always fits in one segment (a segment is
//! made large enough), and a new segment is started only after the previous group is durable.
//!
//! Reading (`read_log`, at start-up): all-zero header bytes where a group would start end a
//! segment cleanly. Anything else that fails its checks is damage: if a valid group follows it
//! anywhere later in the log, acknowledged data would be lost by skipping it, so reading stops
//! with `CorruptWal` naming the segment and offset; otherwise it is the torn tail of a group
//! that was never acknowledged, and is dropped (reported in `LogRead::torn`).

use crate::error::{Error, Result};
use crate::io::crash::{self, Event};
use crate::io::runtime::{DirectWriteFile, WRITE_ALIGN};
use arrow_buffer::Buffer;
use futures::channel::oneshot;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const SEGMENT_MAGIC: &[u8; 8] = b"TSRWAL\0\x01";
const FORMAT_VERSION: u32 = 1;
const GROUP_MAGIC: u32 = 0x3150_5247; // "GRP1"
const GROUP_HEADER_BYTES: usize = 32;
const RECORD_HEADER_BYTES: usize = 8;
/// The largest record accepted (a batch's payload): larger is refused before it is written.
pub const RECORD_BYTES_MAX: usize = 1 << 30;
/// Usual size of a segment file; a group larger than that gets a segment of its own size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes of records one commit group gathers at most (a larger record forms a group alone):
/// bounds the memory a group holds while written, and lets the first records of a burst of
/// large ones be acknowledged without waiting for the whole burst.
const GROUP_BYTES_MAX: usize = 16 << 20;
const ALIGN: u64 = WRITE_ALIGN as u64;

/// Where a record is in its log: segment number in the high 24 bits, byte offset in the low 40.
/// Increases with every record of a log.
pub type Lsn = u64;

fn lsn(segment: u64, offset: u64) -> Lsn {
    (segment << 40) | offset
}

/// The segment an LSN points into.
pub fn lsn_segment(lsn: Lsn) -> u64 {
    lsn >> 40
}

fn align_up(value: u64) -> u64 {
    value.div_ceil(ALIGN) * ALIGN
}

fn checksum(salt: u64, offset: u64, parts: &[&[u8]]) -> u32 {
    let mut crc = crc32c::crc32c(&salt.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &offset.to_le_bytes());
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc
}

pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

fn segment_header(log_id: &str, segment: u64, salt: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(WRITE_ALIGN);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&segment.to_le_bytes());
    header.extend_from_slice(&salt.to_le_bytes());
    header.extend_from_slice(&(log_id.len() as u16).to_le_bytes());
    header.extend_from_slice(log_id.as_bytes());
    let crc = checksum(0, 0, &[&header]);
    header.extend_from_slice(&crc.to_le_bytes());
    header.resize(WRITE_ALIGN, 0);
    header
}

/// Parses a segment header: (segment number, salt, log id).
fn parse_segment_header(block: &[u8]) -> std::result::Result<(u64, u64, String), String> {
    if block.len() < 32 || &block[..8] != SEGMENT_MAGIC {
        return Err("not a write-ahead log segment (bad magic)".into());
    }
    let version = u32::from_le_bytes(block[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let segment = u64::from_le_bytes(block[12..20].try_into().expect("8 bytes"));
    let salt = u64::from_le_bytes(block[20..28].try_into().expect("8 bytes"));
    let id_len = u16::from_le_bytes(block[28..30].try_into().expect("2 bytes")) as usize;
    let end = 30 + id_len;
    if end + 4 > block.len() {
        return Err("segment header is truncated".into());
    }
    let stored = u32::from_le_bytes(block[end..end + 4].try_into().expect("4 bytes"));
    if checksum(0, 0, &[&block[..end]]) != stored {
        return Err("segment header checksum mismatch".into());
    }
    let log_id = String::from_utf8_lossy(&block[30..end]).into_owned();
    Ok((segment, salt, log_id))
}

/// A record as it is handed to the log: its payload in parts, written back to back (a batch as
/// it arrived, without gathering it into one buffer first).
pub type Payload = Vec<Buffer>;

fn payload_len(payload: &Payload) -> usize {
    payload.iter().map(|part| part.len()).sum()
}

/// The headers of a group written at `offset`: the group header, then each record's (length and
/// checksum). With the records' parts between them, they are the group's bytes; zeros pad it to
/// the next block.
fn group_headers(
    salt: u64,
    offset: u64,
    group: u64,
    records: &[Payload],
) -> ([u8; GROUP_HEADER_BYTES], Vec<[u8; RECORD_HEADER_BYTES]>) {
    let body: usize = records
        .iter()
        .map(|r| RECORD_HEADER_BYTES + payload_len(r))
        .sum();
    let mut header = [0u8; GROUP_HEADER_BYTES];
    header[0..4].copy_from_slice(&GROUP_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&(records.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&(body as u64).to_le_bytes());
    header[16..24].copy_from_slice(&group.to_le_bytes());
    let crc = checksum(salt, offset, &[&header[..24]]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    let mut at = offset + GROUP_HEADER_BYTES as u64;
    let record_headers = records
        .iter()
        .map(|record| {
            let length = payload_len(record);
            let length_bytes = (length as u32).to_le_bytes();
            let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + record.len());
            parts.push(&length_bytes);
            parts.extend(record.iter().map(|part| part.as_slice()));
            let mut header = [0u8; RECORD_HEADER_BYTES];
            header[0..4].copy_from_slice(&length_bytes);
            header[4..8].copy_from_slice(&checksum(salt, at, &parts).to_le_bytes());
            at += (RECORD_HEADER_BYTES + length) as u64;
            header
        })
        .collect();
    (header, record_headers)
}

/// The slices that make up a group's bytes, in order (without the padding).
fn group_slices<'a>(
    header: &'a [u8; GROUP_HEADER_BYTES],
    record_headers: &'a [[u8; RECORD_HEADER_BYTES]],
    records: &'a [Payload],
) -> Vec<&'a [u8]> {
    let mut slices = vec![&header[..]];
    for (record_header, record) in record_headers.iter().zip(records) {
        slices.push(record_header);
        slices.extend(record.iter().map(|part| part.as_slice()));
    }
    slices
}

/// A valid group at `offset` of `data`: (group number, records as (LSN offset, payload range),
/// offset of the next group). `Ok(None)`: all-zero header (the segment's clean end).
#[allow(clippy::type_complexity)]
fn parse_group(
    data: &[u8],
    salt: u64,
    offset: u64,
) -> std::result::Result<Option<(u64, Vec<(u64, std::ops::Range<usize>)>, u64)>, String> {
    let start = offset as usize;
    let Some(header) = data.get(start..start + GROUP_HEADER_BYTES) else {
        return Ok(None);
    };
    if header.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    if magic != GROUP_MAGIC {
        return Err("bad group magic".into());
    }
    let stored = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    if checksum(salt, offset, &[&header[..24]]) != stored {
        return Err("group header checksum mismatch".into());
    }
    let count = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let body = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let group = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let end = (start + GROUP_HEADER_BYTES)
        .checked_add(usize::try_from(body).map_err(|_| "group length overflows".to_string())?)
        .filter(|&end| end <= data.len())
        .ok_or_else(|| format!("group of {body} bytes runs past the end of the segment"))?;
    let mut records = Vec::with_capacity(count.min(1 << 16));
    let mut at = start + GROUP_HEADER_BYTES;
    for index in 0..count {
        let header = data
            .get(at..at + RECORD_HEADER_BYTES)
            .filter(|_| at + RECORD_HEADER_BYTES <= end)
            .ok_or_else(|| format!("record {index} of the group is cut off"))?;
        let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let stored = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let payload = at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + length;
        if payload.end > end {
            return Err(format!("record {index} of the group is cut off"));
        }
        if checksum(salt, at as u64, &[&header[0..4], &data[payload.clone()]]) != stored {
            return Err(format!("record {index} of the group fails its checksum"));
        }
        records.push((at as u64, payload.clone()));
        at = payload.end;
    }
    if at != end {
        return Err("group length disagrees with its records".into());
    }
    Ok(Some((group, records, align_up(end as u64))))
}

/// One record read back: its LSN and payload.
pub struct LogRecord {
    pub lsn: Lsn,
    pub payload: Vec<u8>,
}

/// What `read_log` found in one log directory.
#[derive(Default)]
pub struct LogRead {
    pub records: Vec<LogRecord>,
    /// Segment files read, in order.
    pub segments: Vec<PathBuf>,
    /// A torn tail that was dropped: (segment, offset, what was wrong).
    pub torn: Option<(PathBuf, u64, String)>,
    /// Where reading ended (segment number, offset): what `seal` records.
    pub end: Option<(u64, u64)>,
}

/// Segment files of a log directory, by segment number (a `.new` file is a segment whose
/// creation did not finish: it never held a record).
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(error) => return Err(Error::io(dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_suffix(".wal")
            .and_then(|n| n.parse::<u64>().ok())
        {
            segments.push((number, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// In a log directory read by a recovery: where that reading ended (segment and offset). The
/// dead process's last writes may still land after it exited (io_uring completes them in the
/// kernel), so later readings stop at the seal: what one recovery did not see, no later one
/// sees either, and a batch resent meanwhile is never found twice.
const SEAL_FILE: &str = "sealed";

fn read_seal(dir: &Path) -> Result<Option<(u64, u64)>> {
    let path = dir.join(SEAL_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(&path, error)),
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Ok(Some((segment, offset))),
        _ => Err(Error::CorruptWal {
            path,
            offset: 0,
            message: format!("bad seal {text:?}"),
        }),
    }
}

/// Records where a reading of the log in `dir` ended (see `SEAL_FILE`); durable on return.
pub fn seal(dir: &Path, end: (u64, u64)) -> Result<()> {
    let path = dir.join(SEAL_FILE);
    let temp = dir.join(format!("{SEAL_FILE}.tmp"));
    std::fs::write(&temp, format!("{} {}\n", end.0, end.1)).map_err(|e| Error::io(&temp, e))?;
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&temp, e))?;
    crash::after(Event::SyncFile(&temp));
    std::fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
    crash::after(Event::Rename(&path));
    crate::table::manifest::sync_dir(dir)
}

/// Reads every record of the log in `dir`, checking each group (see the module comment), up
/// to its seal if an earlier recovery left one.
pub fn read_log(dir: &Path) -> Result<LogRead> {
    let mut read = LogRead::default();
    let seal = read_seal(dir)?;
    let mut segments = list_segments(dir)?;
    if let Some((last, _)) = seal {
        segments.retain(|(number, _)| *number <= last);
    }
    // (segment path, data, salt, first group offset) of every segment, read once.
    let mut loaded = Vec::with_capacity(segments.len());
    for (number, path) in &segments {
        let mut data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if let Some((last, end)) = seal {
            if *number == last {
                data.truncate(end as usize);
            }
        }
        let corrupt = |message: String| Error::CorruptWal {
            path: path.clone(),
            offset: 0,
            message,
        };
        let (segment, salt, _) = parse_segment_header(&data).map_err(corrupt)?;
        if segment != *number {
            return Err(corrupt(format!(
                "header says segment {segment}, the file name {number}"
            )));
        }
        loaded.push((path.clone(), data, salt, segment));
        read.segments.push(path.clone());
    }
    let mut expected_group: Option<u64> = None;
    for index in 0..loaded.len() {
        let (path, data, salt, segment) = &loaded[index];
        let mut offset = ALIGN;
        loop {
            read.end = Some((*segment, offset));
            match parse_group(data, *salt, offset) {
                Ok(None) => break,
                Ok(Some((group, records, next))) => {
                    if let Some(expected) = expected_group {
                        if group != expected {
                            return Err(Error::CorruptWal {
                                path: path.clone(),
                                offset,
                                message: format!("group {group} where group {expected} belongs"),
                            });
                        }
                    }
                    expected_group = Some(group + 1);
                    for (at, payload) in records {
                        read.records.push(LogRecord {
                            lsn: lsn(*segment, at),
                            payload: data[payload].to_vec(),
                        });
                    }
                    offset = next;
                }
                Err(message) => {
                    if let Some((later_path, later_offset)) =
                        later_valid_group(&loaded, index, offset)
                    {
                        return Err(Error::CorruptWal {
                            path: path.clone(),
                            offset,
                            message: format!(
                                "{message}, and a valid group follows ({} at offset \
                                 {later_offset}): acknowledged data would be lost",
                                later_path.display()
                            ),
                        });
                    }
                    read.torn = Some((path.clone(), offset, message));
                    return Ok(read);
                }
            }
        }
    }
    Ok(read)
}

/// The first valid group after the damage at `offset` of segment `index`, if any.
fn later_valid_group(
    loaded: &[(PathBuf, Vec<u8>, u64, u64)],
    index: usize,
    offset: u64,
) -> Option<(PathBuf, u64)> {
    for (i, (path, data, salt, _)) in loaded.iter().enumerate().skip(index) {
        let mut at = if i == index { offset + ALIGN } else { ALIGN };
        while at + GROUP_HEADER_BYTES as u64 <= data.len() as u64 {
            if matches!(parse_group(data, *salt, at), Ok(Some(_))) {
                return Some((path.clone(), at));
            }
            at += ALIGN;
        }
    }
    None
}

struct Segment {
    number: u64,
    salt: u64,
    file: Rc<DirectWriteFile>,
    size: u64,
    /// Where the next group goes.
    offset: u64,
}

struct Pending {
    payload: Payload,
    on_durable: Box<dyn FnOnce(Lsn)>,
    done: oneshot::Sender<Result<Lsn>>,
}

#[derive(Default)]
struct WriterState {
    segment: Option<Segment>,
    next_segment: u64,
    next_group: u64,
    pending: Vec<Pending>,
    /// A task is writing a group; new records wait for the next one.
    committing: bool,
}

/// One core's log writer (core-local: `Rc`/`RefCell`, no locks).
pub struct WalWriter {
    dir: PathBuf,
    id: String,
    segment_bytes: u64,
    state: RefCell<WriterState>,
}

impl WalWriter {
    /// A writer for a new log `id` in `dir` (created on the first append).
    pub fn new(dir: PathBuf, id: String, segment_bytes: u64) -> WalWriter {
        WalWriter {
            dir,
            id,
            segment_bytes: segment_bytes.next_multiple_of(ALIGN).max(ALIGN * 2),
            state: RefCell::new(WriterState {
                next_segment: 1,
                ..Default::default()
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment being written, if any (segments before it are complete).
    pub fn current_segment(&self) -> Option<u64> {
        self.state.borrow().segment.as_ref().map(|s| s.number)
    }

    /// Appends one record; resolves with its LSN once it is durable. `on_durable` runs first,
    /// in LSN order with the rest of its group, on this core, right after the group's fsync,
    /// whether or not the caller still waits: what a durable record changes (buffers, windows)
    /// must not depend on the caller (a cancelled call), nor follow a later record's change.
    pub async fn append(
        self: &Rc<Self>,
        payload: Payload,
        on_durable: Box<dyn FnOnce(Lsn)>,
    ) -> Result<Lsn> {
        let length = payload_len(&payload);
        if length > RECORD_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "a write-ahead log record",
                limit: RECORD_BYTES_MAX as u64,
                detail: format!("{length} bytes"),
            });
        }
        let (done, result) = oneshot::channel();
        let lead = {
            let mut state = self.state.borrow_mut();
            state.pending.push(Pending {
                payload,
                on_durable,
                done,
            });
            !std::mem::replace(&mut state.committing, true)
        };
        if lead {
            // A task of its own writes groups until no record waits: it outlives a cancelled
            // caller, whose record may already be in the group being written.
            let writer = self.clone();
            crate::io::runtime::spawn_local(async move { writer.commit_loop().await });
        }
        result
            .await
            .map_err(|_| Error::Internal("the log writer stopped".into()))?
    }

    async fn commit_loop(&self) {
        loop {
            let batch = {
                let mut state = self.state.borrow_mut();
                if state.pending.is_empty() {
                    state.committing = false;
                    return;
                }
                let mut bytes = 0;
                let count = state
                    .pending
                    .iter()
                    .take_while(|p| {
                        let first = bytes == 0;
                        bytes += payload_len(&p.payload);
                        first || bytes <= GROUP_BYTES_MAX
                    })
                    .count();
                state.pending.drain(..count).collect::<Vec<_>>()
            };
            let mut payloads = Vec::with_capacity(batch.len());
            let mut waiters = Vec::with_capacity(batch.len());
            for pending in batch {
                payloads.push(pending.payload);
                waiters.push((pending.on_durable, pending.done));
            }
            match self.write_group(&payloads).await {
                Ok(lsns) => {
                    drop(payloads);
                    let mut senders = Vec::with_capacity(waiters.len());
                    for ((on_durable, sender), lsn) in waiters.into_iter().zip(lsns) {
                        on_durable(lsn);
                        senders.push((sender, lsn));
                    }
                    for (sender, lsn) in senders {
                        let _ = sender.send(Ok(lsn));
                    }
                }
                Err(error) => {
                    for (_, sender) in waiters {
                        let _ = sender.send(Err(error.clone_for_waiters()));
                    }
                }
            }
        }
    }

    /// Writes one group and fsyncs it; returns each record's LSN.
    async fn write_group(&self, records: &[Payload]) -> Result<Vec<Lsn>> {
        let body: u64 = records
            .iter()
            .map(|r| (RECORD_HEADER_BYTES + payload_len(r)) as u64)
            .sum();
        let needed = align_up(GROUP_HEADER_BYTES as u64 + body);
        let fits = {
            let state = self.state.borrow();
            state
                .segment
                .as_ref()
                .is_some_and(|s| s.offset + needed <= s.size)
        };
        if !fits {
            self.rotate(needed).await?;
        }
        let (file, salt, number, offset, group) = {
            let mut state = self.state.borrow_mut();
            let group = state.next_group;
            let segment = state.segment.as_mut().expect("rotate made one");
            (
                segment.file.clone(),
                segment.salt,
                segment.number,
                segment.offset,
                group,
            )
        };
        let (header, record_headers) = group_headers(salt, offset, group, records);
        let slices = group_slices(&header, &record_headers, records);
        let written = async {
            let written = file.write_at(&slices, offset).await?;
            file.sync().await.map(|()| written)
        }
        .await;
        let mut state = self.state.borrow_mut();
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                // What reached the disk of this group is unknown (and after a failed fsync the
                // page state is too): start the next group in a fresh segment. The group may
                // still be found at recovery; its writers were told it failed and resend under
                // the same keys.
                state.segment = None;
                return Err(Error::io(segment_path(&self.dir, number), error));
            }
        };
        debug_assert_eq!(written, needed);
        state.next_group = group + 1;
        let segment = state.segment.as_mut().expect("still there");
        segment.offset = offset + written;
        let mut at = offset + GROUP_HEADER_BYTES as u64;
        Ok(records
            .iter()
            .map(|record| {
                let this = lsn(number, at);
                at += (RECORD_HEADER_BYTES + payload_len(record)) as u64;
                this
            })
            .collect())
    }

    /// Starts a new segment with room for at least `needed` bytes of groups.
    async fn rotate(&self, needed: u64) -> Result<()> {
        let (number, old) = {
            let mut state = self.state.borrow_mut();
            let number = state.next_segment;
            state.next_segment += 1;
            (number, state.segment.take())
        };
        if let Some(old) = old {
            if let Ok(file) = Rc::try_unwrap(old.file) {
                file.close().await;
            }
        }
        let first = number == 1;
        if first {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        }
        let size = self.segment_bytes.max(ALIGN + needed);
        let path = segment_path(&self.dir, number);
        // Built under a temporary name and renamed once its header is durable: a segment file
        // always starts with a valid header, whenever the process dies.
        let building = path.with_extension("new");
        let salt = crate::table::manifest::new_incarnation();
        let file = match DirectWriteFile::create(&building, size).await {
            Ok(file) => file,
            Err(error) => {
                let _ = std::fs::remove_file(&building);
                return Err(Error::io(&path, error));
            }
        };
        let header = segment_header(&self.id, number, salt);
        let written = async {
            file.write_at(&[&header], 0).await?;
            file.sync().await?;
            file.rename(&path).await
        }
        .await;
        if let Err(error) = written {
            file.close().await;
            let _ = std::fs::remove_file(&building);
            return Err(Error::io(&path, error));
        }
        // The new file's directory entry (and the log directory's, for the first) must survive
        // a crash before any group in it is acknowledged.
        crate::table::manifest::sync_dir(&self.dir)?;
        if first {
            if let Some(parent) = self.dir.parent() {
                crate::table::manifest::sync_dir(parent)?;
            }
        }
        self.state.borrow_mut().segment = Some(Segment {
            number,
            salt,
            file: Rc::new(file),
            size,
            offset: ALIGN,
        });
        Ok(())
    }
}

impl Error {
    /// The same failure for each writer of a group (errors are not `Clone` in general).
    fn clone_for_waiters(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
            other => Error::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's bytes as `write_group` writes them at `offset`.
    fn encode_group(salt: u64, offset: u64, group: u64, records: &[Vec<u8>]) -> Vec<u8> {
        // Each record in two parts, as a batch arrives in pieces.
        let records: Vec<Payload> = records
            .iter()
            .map(|r| {
                let (head, tail) = r.split_at(r.len() / 2);
                vec![Buffer::from(head), Buffer::from(tail)]
            })
            .collect();
        let (header, record_headers) = group_headers(salt, offset, group, &records);
        let mut bytes = group_slices(&header, &record_headers, &records).concat();
        bytes.resize(align_up(bytes.len() as u64) as usize, 0);
        bytes
    }

    fn segment_bytes(id: &str, number: u64, salt: u64, groups: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut data = segment_header(id, number, salt);
        for (i, records) in groups.iter().enumerate() {
            let offset = data.len() as u64;
            data.extend(encode_group(salt, offset, i as u64, records));
        }
        data.resize(data.len() + 4 * WRITE_ALIGN, 0);
        data
    }

    fn write_segment(dir: &Path, number: u64, data: &[u8]) -> PathBuf {
        let path = segment_path(dir, number);
        std::fs::write(&path, data).unwrap();
        path
    }

    /// Records that pile up while a group is written form the next groups, each gathering at
    /// most `GROUP_BYTES_MAX` (a record larger than that alone); all are acknowledged in order.
    #[test]
    fn records_waiting_on_a_group_form_groups_of_at_most_the_cap() {
        use crate::io::runtime::{CoreOptions, CorePool};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let options = CoreOptions::unpinned(1);
        let pool = CorePool::start(&options, |_| ()).expect("pool starts");
        const RECORDS: usize = 40;
        let writer_dir = log.clone();
        let lsns = futures::executor::block_on(pool.run_on(0, move |_, _| async move {
            let writer = Rc::new(WalWriter::new(writer_dir, "core-0".into(), SEGMENT_BYTES));
            let appends = (0..RECORDS).map(|i| {
                let payload = vec![Buffer::from(vec![i as u8; 1 << 20])];
                writer.append(payload, Box::new(|_| {}))
            });
            futures::future::join_all(appends).await
        }))
        .unwrap();
        let lsns: Vec<Lsn> = lsns.into_iter().map(|r| r.unwrap()).collect();
        assert!(lsns.windows(2).all(|w| w[0] < w[1]));
        let read = read_log(&log).unwrap();
        assert_eq!(read.records.len(), RECORDS);
        let mut group_bodies = Vec::new();
        for segment in &read.segments {
            let data = std::fs::read(segment).unwrap();
            let (_, salt, _) = parse_segment_header(&data).unwrap();
            let mut offset = ALIGN;
            while let Some((_, records, next)) = parse_group(&data, salt, offset).unwrap() {
                group_bodies.push(records.iter().map(|(_, r)| r.len()).sum::<usize>());
                offset = next;
            }
        }
        assert!(group_bodies.len() > 2, "groups: {group_bodies:?}");
        assert!(
            group_bodies.iter().all(|&b| b <= GROUP_BYTES_MAX),
            "groups: {group_bodies:?}"
        );
    }

    #[test]
    fn groups_read_back_with_increasing_lsns() {
        let dir = tempfile::tempdir().unwrap();
        let groups = vec![
            vec![b"one".to_vec(), b"two".to_vec()],
            vec![vec![7u8; 5000]],
        ];
        write_segment(dir.path(), 1, &segment_bytes("core-0", 1, 99, &groups));
        let read = read_log(dir.path()).unwrap();
        let payloads: Vec<&[u8]> = read.records.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(
            payloads,
            vec![&b"one"[..], &b"two"[..], &vec![7u8; 5000][..]]
        );
        assert!(read.records.windows(2).all(|w| w[0].lsn < w[1].lsn));
        assert!(read.torn.is_none());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_before_a_valid_group_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let groups = vec![
            vec![b"first".to_vec()],
            vec![b"second".to_vec()],
            vec![b"third".to_vec()],
        ];
        let data = segment_bytes("core-0", 1, 5, &groups);
        // Torn: the last group's record loses its end.
        let mut torn = data.clone();
        let third = 3 * WRITE_ALIGN;
        torn[third + GROUP_HEADER_BYTES + RECORD_HEADER_BYTES + 2] ^= 0xff;
        let path = write_segment(dir.path(), 1, &torn);
        let read = read_log(dir.path()).unwrap();
        assert_eq!(read.records.len(), 2);
        let (torn_path, offset, _) = read.torn.unwrap();
        assert_eq!((torn_path, offset), (path.clone(), third as u64));
        // Corrupt in the middle: the second group's payload flipped, the third intact.
        let mut middle = data;
        middle[2 * WRITE_ALIGN + GROUP_HEADER_BYTES + RECORD_HEADER_BYTES] ^= 0x01;
        write_segment(dir.path(), 1, &middle);
        std::fs::remove_file(&path).ok();
        write_segment(dir.path(), 1, &middle);
        let error = read_log(dir.path()).err().expect("corruption is an error");
        let Error::CorruptWal { offset, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(*offset, 2 * WRITE_ALIGN as u64, "{error}");
    }

    #[test]
    fn stale_bytes_of_another_segment_do_not_pass_for_records() {
        let dir = tempfile::tempdir().unwrap();
        // Segment 1's groups copied into segment 2's file under another salt: never valid.
        let old = segment_bytes("core-0", 1, 1, &[vec![b"old".to_vec()]]);
        let mut new = segment_header("core-0", 2, 2);
        new.extend_from_slice(&old[WRITE_ALIGN..]);
        write_segment(dir.path(), 2, &new);
        let read = read_log(dir.path()).unwrap();
        assert!(read.records.is_empty());
        assert!(read.torn.is_some());
    }
}
