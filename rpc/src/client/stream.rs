//! A query's result as it arrives: the client side of `BatchSink` decodes pushes in arrival order
//! into a channel the caller reads as a `Stream` of batches.

use super::*;

/// Bytes of decoded result a query stream buffers ahead of its reader before the server waits.
const STREAM_BUFFER_BYTES: usize = 16 << 20;
/// Largest Arrow IPC message a result may hold (the server cuts results into ~1 MiB pushes).
const RESULT_MESSAGE_BYTES_MAX: u64 = 1 << 30;

/// The end of a result the connection thread holds: makes the sink handed to the server, and
/// reports a failed call into the stream.
pub(super) struct ResultSink {
    items: mpsc::UnboundedSender<Item>,
    flow: Arc<Flow>,
}

impl ResultSink {
    pub(super) fn client(&self) -> batch_sink::Client {
        capnp_rpc::new_client(SinkServer {
            stream: RefCell::new(IpcStreamReader::new(RESULT_MESSAGE_BYTES_MAX)),
            items: self.items.clone(),
            flow: self.flow.clone(),
        })
    }

    pub(super) fn fail(&self, error: ClientError) {
        let _ = self.items.unbounded_send(Item::Failed(error));
    }
}

/// A new result: the sink's end and the caller's.
pub(super) fn result_stream() -> (ResultSink, QueryStream) {
    let flow = Arc::new(Flow::default());
    let (items, receiver) = mpsc::unbounded();
    let sink = ResultSink {
        items,
        flow: flow.clone(),
    };
    let stream = QueryStream {
        items: receiver,
        flow,
        schema: None,
        stats: None,
        finished: false,
    };
    (sink, stream)
}

enum Item {
    Schema(SchemaRef),
    Batch(RecordBatch, usize),
    Done(QueryStats),
    Failed(ClientError),
}

/// Bytes decoded but not yet taken by the reader, and a way to wake the sink when it drops.
#[derive(Default)]
struct Flow {
    buffered: AtomicUsize,
    room: tokio::sync::Notify,
}

/// The client side of `BatchSink`: decodes pushes in arrival order and waits while the reader
/// is more than `STREAM_BUFFER_BYTES` behind, which holds back the server through flow control.
struct SinkServer {
    stream: RefCell<IpcStreamReader>,
    items: mpsc::UnboundedSender<Item>,
    flow: Arc<Flow>,
}

impl SinkServer {
    fn decode(&self, params: &batch_sink::PushParams) -> Result<(), capnp::Error> {
        let bytes = params.get()?.get_ipc()?;
        let decoded = self
            .stream
            .borrow_mut()
            .push(bytes)
            .map_err(|e| capnp::Error::failed(format!("invalid: {e}")))?;
        let gone = || capnp::Error::failed("cancelled: the reader dropped the result".into());
        for item in decoded {
            let item = match item {
                Decoded::Schema(schema) => Item::Schema(schema),
                Decoded::Batch(batch) => {
                    let size = batch.get_array_memory_size();
                    self.flow.buffered.fetch_add(size, Ordering::AcqRel);
                    Item::Batch(batch, size)
                }
            };
            self.items.unbounded_send(item).map_err(|_| gone())?;
        }
        Ok(())
    }
}

impl batch_sink::Server for SinkServer {
    fn push(
        self: Rc<Self>,
        params: batch_sink::PushParams,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        // Decoding happens at dispatch, so batches keep the order the server sent them in.
        let decoded = self.decode(&params);
        async move {
            decoded?;
            loop {
                let notified = self.flow.room.notified();
                let mut notified = std::pin::pin!(notified);
                // Registered before the check, so a wake-up between the two is not lost.
                notified.as_mut().enable();
                if self.items.is_closed() {
                    return Err(capnp::Error::failed(
                        "cancelled: the reader dropped the result".into(),
                    ));
                }
                if self.flow.buffered.load(Ordering::Acquire) <= STREAM_BUFFER_BYTES {
                    return Ok(());
                }
                notified.await;
            }
        }
    }

    fn done(
        self: Rc<Self>,
        params: batch_sink::DoneParams,
        _: batch_sink::DoneResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        // Handled at dispatch, like `push`, so it follows every batch into the channel.
        let stats = params
            .get()
            .and_then(|p| p.get_stats())
            .map(QueryStats::read);
        let whole = self.stream.borrow().finish();
        let item = match (stats, whole) {
            (Ok(stats), Ok(())) => Item::Done(stats),
            (Err(e), _) => Item::Failed(e.into()),
            (_, Err(e)) => Item::Failed(data_error(format!("the result stream is not whole: {e}"))),
        };
        let _ = self.items.unbounded_send(item);
        std::future::ready(Ok(()))
    }
}

/// The batches of one result, in order. Ends after the last batch; then `stats` is set.
pub struct QueryStream {
    items: mpsc::UnboundedReceiver<Item>,
    flow: Arc<Flow>,
    schema: Option<SchemaRef>,
    stats: Option<QueryStats>,
    finished: bool,
}

impl QueryStream {
    /// The whole result, once it has all arrived.
    pub async fn collect(mut self) -> Result<QueryOutput, ClientError> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        let schema = self
            .schema()
            .ok_or_else(|| data_error("the result carried no schema"))?;
        let stats = self.stats().cloned().unwrap_or_default();
        Ok(QueryOutput {
            schema,
            batches,
            stats,
        })
    }

    /// The result's schema, once the first message has arrived.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    /// The server's counters, once the stream has ended successfully.
    pub fn stats(&self) -> Option<&QueryStats> {
        self.stats.as_ref()
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match self.items.poll_next_unpin(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(ClientError::Disconnected(
                        "the connection closed during the query".into(),
                    ))));
                }
                Poll::Ready(Some(Item::Schema(schema))) => self.schema = Some(schema),
                Poll::Ready(Some(Item::Batch(batch, size))) => {
                    self.flow.buffered.fetch_sub(size, Ordering::AcqRel);
                    self.flow.room.notify_waiters();
                    return Poll::Ready(Some(Ok(batch)));
                }
                Poll::Ready(Some(Item::Done(stats))) => {
                    self.stats = Some(stats);
                    self.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Item::Failed(error))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // Wake a sink waiting for room so it sees the reader is gone and fails the push.
        self.items.close();
        self.flow.buffered.store(0, Ordering::Release);
        self.flow.room.notify_waiters();
    }
}
