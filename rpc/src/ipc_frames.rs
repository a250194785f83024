//! Reading an Arrow IPC stream that arrives in pieces: an import's `ImportStream.write`s on the
//! server, a result's `BatchSink.push`es on the client. One reader for both.
//!
//! Every message is checked before any byte reaches Arrow's decoder: it starts with the
//! continuation marker, declares sizes under a bound, is a stream-format message (schema first,
//! then record and dictionary batches), and the stream ends with the end-of-stream marker. Bytes
//! may be split across pieces anywhere; what is left over at the end (a message cut short, no
//! end marker) is an error, never silently dropped. Each byte is copied once into the message
//! that holds it; a partial message waits in `pending` for the rest.
//!
//! Pure byte logic: no I/O, no RPC.

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::MessageHeader;
use arrow_schema::{Schema, SchemaRef};
use std::sync::Arc;

const CONTINUATION_MARKER: [u8; 4] = [0xff; 4];
/// Continuation marker and metadata length.
const PREFIX_BYTES: usize = 8;

/// What a piece of the stream decoded to, in stream order.
pub enum Decoded {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

/// Frames and decodes one Arrow IPC stream.
pub struct IpcStreamReader {
    framing: StreamFraming,
    decoder: StreamDecoder,
}

impl IpcStreamReader {
    /// `message_bytes_max` bounds one message (metadata plus body).
    pub fn new(message_bytes_max: u64) -> IpcStreamReader {
        IpcStreamReader {
            framing: StreamFraming::new(message_bytes_max),
            decoder: StreamDecoder::new(),
        }
    }

    /// Takes the next bytes of the stream; returns what the messages they complete hold.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Decoded>, String> {
        self.push_buffer(&Buffer::from(bytes))
    }

    /// As `push`, for bytes already in a `Buffer`: the batches of messages it holds whole view
    /// it, without a copy.
    pub fn push_buffer(&mut self, bytes: &Buffer) -> Result<Vec<Decoded>, String> {
        let mut decoded = Vec::new();
        for frame in self.framing.push(bytes)? {
            if let Some(schema) = frame.schema {
                decoded.push(Decoded::Schema(Arc::new(schema)));
            }
            let mut buffer = frame.bytes;
            while !buffer.is_empty() {
                let before = buffer.len();
                match self.decoder.decode(&mut buffer) {
                    Ok(Some(batch)) => decoded.push(Decoded::Batch(batch)),
                    Ok(None) if buffer.len() == before => {
                        return Err("an Arrow IPC message the decoder did not take whole".into())
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("bad Arrow IPC data: {e}")),
                }
            }
        }
        Ok(decoded)
    }

    /// At the end: whether the stream is whole (see `StreamFraming::finish`).
    pub fn finish(&self) -> Result<(), String> {
        self.framing.finish()
    }
}

/// A message as received: its bytes (prefix, metadata and body) and, for the schema message, the
/// schema it declares.
pub struct Frame {
    pub bytes: Buffer,
    pub schema: Option<Schema>,
}

/// What has been received of one IPC stream.
pub struct StreamFraming {
    /// Bytes of the message being received (a prefix of it).
    pending: Vec<u8>,
    /// Its whole length, once its metadata has arrived.
    pending_length: Option<usize>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    /// Messages received whole.
    messages: u64,
    ended: bool,
    message_bytes_max: u64,
}

/// What the bytes at the front of the stream are.
enum Next {
    /// Not all there yet; the message's whole length once its metadata is there.
    Incomplete { length: Option<usize> },
    /// The end-of-stream marker.
    End,
    /// A whole message, `length` bytes long.
    Message {
        length: usize,
        schema: Option<Schema>,
    },
}

impl StreamFraming {
    /// `message_bytes_max` bounds one message (metadata plus body).
    pub fn new(message_bytes_max: u64) -> StreamFraming {
        StreamFraming {
            pending: Vec::new(),
            pending_length: None,
            offset: 0,
            messages: 0,
            ended: false,
            message_bytes_max,
        }
    }

    /// Takes the next bytes of the stream; returns the messages they complete, in order. Whole
    /// messages are slices of `bytes`; a message split across pieces is gathered in `pending`
    /// (one copy, its length reserved once known) and handed on as that buffer.
    pub fn push(&mut self, bytes: &Buffer) -> Result<Vec<Frame>, String> {
        if !self.pending.is_empty() {
            return self.push_pending(bytes);
        }
        let mut frames = Vec::new();
        let mut start = 0;
        loop {
            let rest = &bytes[start..];
            if rest.is_empty() {
                return Ok(frames);
            }
            if self.ended {
                return Err(format!(
                    "{} bytes after the end-of-stream marker",
                    rest.len()
                ));
            }
            match self.next(rest)? {
                Next::Incomplete { length } => {
                    let mut pending = Vec::with_capacity(length.unwrap_or(0).max(rest.len()));
                    pending.extend_from_slice(rest);
                    self.pending = pending;
                    self.pending_length = length;
                    return Ok(frames);
                }
                Next::End => {
                    self.ended = true;
                    start += PREFIX_BYTES;
                    self.offset += PREFIX_BYTES as u64;
                }
                Next::Message { length, schema } => {
                    frames.push(Frame {
                        bytes: bytes.slice_with_length(start, length),
                        schema,
                    });
                    start += length;
                    self.offset += length as u64;
                    self.messages += 1;
                }
            }
        }
    }

    /// `push` while a message begun by an earlier piece waits in `pending`.
    fn push_pending(&mut self, bytes: &Buffer) -> Result<Vec<Frame>, String> {
        let had = self.pending.len();
        // Once the message's length is known, only its bytes join it.
        let wanted = match self.pending_length {
            Some(length) => (length - had).min(bytes.len()),
            None => bytes.len(),
        };
        self.pending.extend_from_slice(&bytes[..wanted]);
        let (used, frame) = match self.next(&self.pending)? {
            Next::Incomplete { length } => {
                if let (Some(length), None) = (length, self.pending_length) {
                    self.pending.reserve_exact(length - self.pending.len());
                    self.pending_length = Some(length);
                }
                return Ok(Vec::new());
            }
            Next::End => {
                self.ended = true;
                (PREFIX_BYTES, None)
            }
            Next::Message { length, schema } => {
                let mut message = std::mem::take(&mut self.pending);
                message.truncate(length);
                self.messages += 1;
                (
                    length,
                    Some(Frame {
                        bytes: Buffer::from_vec(message),
                        schema,
                    }),
                )
            }
        };
        self.pending.clear();
        self.pending_length = None;
        self.offset += used as u64;
        let mut frames: Vec<Frame> = frame.into_iter().collect();
        frames.extend(self.push(&bytes.slice(used - had))?);
        Ok(frames)
    }

    /// At commit: whether the stream is whole. A stream that sent no bytes at all is whole.
    pub fn finish(&self) -> Result<(), String> {
        if !self.pending.is_empty() {
            return Err(format!(
                "truncated message: the stream ends {} bytes into message {} (at byte {})",
                self.pending.len(),
                self.messages + 1,
                self.offset
            ));
        }
        if !self.ended && self.offset > 0 {
            return Err(format!(
                "the stream has no end-of-stream marker after its {} messages",
                self.messages
            ));
        }
        Ok(())
    }

    /// Reads what starts `data` (the stream from `self.offset` on).
    fn next(&self, data: &[u8]) -> Result<Next, String> {
        let marker = &data[..data.len().min(4)];
        if marker != &CONTINUATION_MARKER[..marker.len()] {
            return Err(self.bad_marker(data));
        }
        if data.len() < PREFIX_BYTES {
            return Ok(Next::Incomplete { length: None });
        }
        let declared = i32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        if declared == 0 {
            return Ok(Next::End);
        }
        let message = self.messages + 1;
        if declared < 0 || declared as u64 > self.message_bytes_max {
            return Err(format!(
                "message {message} declares {declared} bytes of metadata (at most {} allowed)",
                self.message_bytes_max
            ));
        }
        let metadata_end = PREFIX_BYTES + declared as usize;
        if data.len() < metadata_end {
            return Ok(Next::Incomplete { length: None });
        }
        // flatbuffers wants its bytes aligned; arrow's buffers are.
        let metadata = Buffer::from(&data[PREFIX_BYTES..metadata_end]);
        let parsed = arrow_ipc::root_as_message(&metadata)
            .map_err(|e| format!("message {message} is not an Arrow IPC message: {e}"))?;
        let header = parsed.header_type();
        let schema = match header {
            MessageHeader::Schema if self.messages == 0 => {
                let fb = parsed.header_as_schema().ok_or_else(|| {
                    format!("message {message}: a schema message without a schema")
                })?;
                Some(
                    arrow_ipc::convert::try_fb_to_schema(fb)
                        .map_err(|e| format!("message {message}: bad schema: {e}"))?,
                )
            }
            MessageHeader::Schema => {
                return Err(format!("message {message} is a second schema message"));
            }
            _ if self.messages == 0 => {
                return Err(format!(
                    "the stream starts with a {header:?} message instead of its schema"
                ));
            }
            MessageHeader::RecordBatch | MessageHeader::DictionaryBatch => None,
            other => {
                return Err(format!(
                    "message {message} is a {other:?} message, not an Arrow IPC stream-format message"
                ));
            }
        };
        let body = parsed.bodyLength();
        if body < 0 || declared as u64 + body as u64 > self.message_bytes_max {
            return Err(format!(
                "message {message} declares a body of {body} bytes (at most {} bytes per message)",
                self.message_bytes_max
            ));
        }
        let length = metadata_end + body as usize;
        if data.len() < length {
            return Ok(Next::Incomplete {
                length: Some(length),
            });
        }
        Ok(Next::Message { length, schema })
    }

    /// Explains bytes that do not start with the continuation marker.
    fn bad_marker(&self, data: &[u8]) -> String {
        let head = &data[..data.len().min(8)];
        let found: String = head.iter().map(|b| format!("{b:02x}")).collect();
        let what = if self.offset == 0 && head.starts_with(b"ARROW1") {
            "this is the Arrow IPC file format, not the stream format"
        } else if self.offset == 0 && head.starts_with(b"PAR1") {
            "this is a Parquet file, not an Arrow IPC stream"
        } else {
            "not an Arrow IPC stream message"
        };
        format!(
            "bad continuation marker at byte {}: expected ffffffff, found {found} ({what})",
            self.offset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use std::sync::Arc;

    fn stream(rows: &[i64], end: bool) -> Vec<u8> {
        let batch = RecordBatch::try_from_iter(vec![(
            "n",
            Arc::new(Int64Array::from(rows.to_vec())) as ArrayRef,
        )])
        .unwrap();
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.write(&batch).unwrap();
        if end {
            writer.finish().unwrap();
        }
        // `into_inner` would add the end-of-stream marker.
        writer.get_ref().clone()
    }

    #[test]
    fn whole_stream_split_anywhere_yields_its_messages() {
        let bytes = stream(&[1, 2, 3], true);
        for cut in 0..bytes.len() {
            let mut framing = StreamFraming::new(1 << 20);
            let mut frames = framing.push(&Buffer::from(&bytes[..cut])).unwrap();
            frames.extend(framing.push(&Buffer::from(&bytes[cut..])).unwrap());
            assert_eq!(frames.len(), 3, "cut at {cut}");
            assert!(frames[0].schema.is_some());
            framing.finish().unwrap();
        }
    }

    /// Pieces of every size from 1 byte up: messages gathered across many pieces come out byte
    /// for byte as sent, in order.
    #[test]
    fn stream_in_pieces_of_any_size_yields_its_messages_byte_for_byte() {
        let bytes = stream(&[1, 2, 3, 4, 5], true);
        let whole: Vec<Vec<u8>> = StreamFraming::new(1 << 20)
            .push(&Buffer::from(&bytes[..]))
            .unwrap()
            .iter()
            .map(|f| f.bytes.to_vec())
            .collect();
        assert_eq!(whole.len(), 3);
        for size in 1..bytes.len() {
            let mut framing = StreamFraming::new(1 << 20);
            let mut frames = Vec::new();
            for piece in bytes.chunks(size) {
                frames.extend(framing.push(&Buffer::from(piece)).unwrap());
            }
            framing.finish().unwrap();
            let got: Vec<Vec<u8>> = frames.iter().map(|f| f.bytes.to_vec()).collect();
            assert_eq!(got, whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn reader_decodes_the_schema_then_every_batch_split_anywhere() {
        let bytes = stream(&[1, 2, 3], true);
        for cut in 0..bytes.len() {
            let mut reader = IpcStreamReader::new(1 << 20);
            let mut decoded = reader.push(&bytes[..cut]).unwrap();
            decoded.extend(reader.push(&bytes[cut..]).unwrap());
            reader.finish().unwrap();
            let shape: Vec<String> = decoded
                .iter()
                .map(|d| match d {
                    Decoded::Schema(schema) => format!("schema {}", schema.field(0).name()),
                    Decoded::Batch(batch) => format!("batch {}", batch.num_rows()),
                })
                .collect();
            assert_eq!(shape, ["schema n", "batch 3", "batch 3"], "cut at {cut}");
        }
    }

    #[test]
    fn cut_short_or_unterminated_streams_fail_at_finish() {
        let bytes = stream(&[1, 2, 3], true);
        for cut in 1..bytes.len() - PREFIX_BYTES {
            let mut framing = StreamFraming::new(1 << 20);
            framing.push(&Buffer::from(&bytes[..cut])).unwrap();
            assert!(framing.finish().is_err(), "cut at {cut} passed");
        }
        let mut framing = StreamFraming::new(1 << 20);
        framing.push(&Buffer::from(stream(&[1], false))).unwrap();
        let error = framing.finish().unwrap_err();
        assert!(error.contains("end-of-stream"), "{error}");
    }

    #[test]
    fn foreign_bytes_and_oversized_messages_fail_at_once() {
        let mut framing = StreamFraming::new(1 << 20);
        let error = framing
            .push(&Buffer::from(&b"PAR1\x15\x04"[..]))
            .err()
            .unwrap();
        assert!(error.contains("Parquet"), "{error}");
        let mut framing = StreamFraming::new(1 << 20);
        let error = framing
            .push(&Buffer::from(&b"ARROW1\0\0"[..]))
            .err()
            .unwrap();
        assert!(error.contains("file format"), "{error}");
        let mut framing = StreamFraming::new(1 << 20);
        let error = framing
            .push(&Buffer::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x7f][..]))
            .err();
        assert!(error.unwrap().contains("at most"));
        let mut framing = StreamFraming::new(1 << 20);
        let mut bytes = stream(&[1], true);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(framing.push(&Buffer::from(bytes)).is_err());
    }
}
