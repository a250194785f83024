//! Framing of the Arrow IPC stream an import receives, checked before any byte reaches Arrow's
//! decoder: every message starts with the continuation marker, declares sizes under a bound, is
//! a stream-format message (schema first, then record and dictionary batches), and the stream
//! ends with the end-of-stream marker. Bytes may be split across writes anywhere; what is left
//! over at the end (a message cut short, no end marker) is an error, never silently dropped.
//!
//! Pure byte logic: no I/O, no RPC; the `ImportStream` service feeds it and decodes the whole
//! messages it hands back.

use arrow_ipc::MessageHeader;
use arrow_schema::Schema;

const CONTINUATION_MARKER: [u8; 4] = [0xff; 4];
/// Continuation marker and metadata length.
const PREFIX_BYTES: usize = 8;

/// A message as received: its bytes (prefix, metadata and body) and, for the schema message, the
/// schema it declares.
pub struct Frame {
    pub bytes: Vec<u8>,
    pub schema: Option<Schema>,
}

/// What has been received of one IPC stream.
pub struct StreamFraming {
    /// Bytes of the message being received (a prefix of it).
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    /// Messages received whole.
    messages: u64,
    ended: bool,
    message_bytes_max: u64,
}

impl StreamFraming {
    /// `message_bytes_max` bounds one message (metadata plus body).
    pub fn new(message_bytes_max: u64) -> StreamFraming {
        StreamFraming {
            pending: Vec::new(),
            offset: 0,
            messages: 0,
            ended: false,
            message_bytes_max,
        }
    }

    /// Takes the next bytes of the stream; returns the messages they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, String> {
        if self.ended && !bytes.is_empty() {
            return Err(format!(
                "{} bytes after the end-of-stream marker",
                bytes.len()
            ));
        }
        self.pending.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// At commit: whether the stream is whole. An import that sent no bytes at all is whole.
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
                "the stream has no end-of-stream marker after its {} messages; nothing was imported",
                self.messages
            ));
        }
        Ok(())
    }

    /// Cuts the next whole message off `pending`, if it is all there.
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        if self.ended {
            return Err(format!(
                "{} bytes after the end-of-stream marker",
                self.pending.len()
            ));
        }
        let marker = &self.pending[..self.pending.len().min(4)];
        if marker != &CONTINUATION_MARKER[..marker.len()] {
            return Err(self.bad_marker());
        }
        if self.pending.len() < PREFIX_BYTES {
            return Ok(None);
        }
        let declared = i32::from_le_bytes([
            self.pending[4],
            self.pending[5],
            self.pending[6],
            self.pending[7],
        ]);
        if declared == 0 {
            self.ended = true;
            self.consume(PREFIX_BYTES);
            if !self.pending.is_empty() {
                return Err(format!(
                    "{} bytes after the end-of-stream marker",
                    self.pending.len()
                ));
            }
            return Ok(None);
        }
        let message = self.messages + 1;
        if declared < 0 || declared as u64 > self.message_bytes_max {
            return Err(format!(
                "message {message} declares {declared} bytes of metadata (at most {} allowed)",
                self.message_bytes_max
            ));
        }
        let metadata_end = PREFIX_BYTES + declared as usize;
        if self.pending.len() < metadata_end {
            return Ok(None);
        }
        // flatbuffers wants its bytes aligned; arrow's buffers are.
        let metadata = arrow_buffer::Buffer::from(&self.pending[PREFIX_BYTES..metadata_end]);
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
        let end = metadata_end + body as usize;
        if self.pending.len() < end {
            return Ok(None);
        }
        let rest = self.pending.split_off(end);
        let bytes = std::mem::replace(&mut self.pending, rest);
        self.offset += end as u64;
        self.messages += 1;
        Ok(Some(Frame { bytes, schema }))
    }

    fn consume(&mut self, bytes: usize) {
        self.pending.drain(..bytes);
        self.offset += bytes as u64;
    }

    /// Explains bytes that do not start with the continuation marker.
    fn bad_marker(&self) -> String {
        let head = &self.pending[..self.pending.len().min(8)];
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
            let mut frames = framing.push(&bytes[..cut]).unwrap();
            frames.extend(framing.push(&bytes[cut..]).unwrap());
            assert_eq!(frames.len(), 3, "cut at {cut}");
            assert!(frames[0].schema.is_some());
            framing.finish().unwrap();
        }
    }

    #[test]
    fn cut_short_or_unterminated_streams_fail_at_finish() {
        let bytes = stream(&[1, 2, 3], true);
        for cut in 1..bytes.len() - PREFIX_BYTES {
            let mut framing = StreamFraming::new(1 << 20);
            framing.push(&bytes[..cut]).unwrap();
            assert!(framing.finish().is_err(), "cut at {cut} passed");
        }
        let mut framing = StreamFraming::new(1 << 20);
        framing.push(&stream(&[1], false)).unwrap();
        let error = framing.finish().unwrap_err();
        assert!(error.contains("end-of-stream"), "{error}");
    }

    #[test]
    fn foreign_bytes_and_oversized_messages_fail_at_once() {
        let mut framing = StreamFraming::new(1 << 20);
        let error = framing.push(b"PAR1\x15\x04").err().unwrap();
        assert!(error.contains("Parquet"), "{error}");
        let mut framing = StreamFraming::new(1 << 20);
        let error = framing.push(b"ARROW1\0\0").err().unwrap();
        assert!(error.contains("file format"), "{error}");
        let mut framing = StreamFraming::new(1 << 20);
        let error = framing.push(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x7f]).err();
        assert!(error.unwrap().contains("at most"));
        let mut framing = StreamFraming::new(1 << 20);
        let mut bytes = stream(&[1], true);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(framing.push(&bytes).is_err());
    }
}
