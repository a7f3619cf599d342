//! The floor: a raw tokio TCP echo with no framework at all.
//!
//! A frame is a 4-byte big-endian length, then a kind byte, then a protobuf body (the same
//! `EchoMessage` bytes as every other stack puts on the wire):
//!
//! ```text
//! frame = length:u32be kind:u8 body        (length counts the kind and the body)
//! kind  = 1 echo (request and answer) | 2 stream open (a StreamRequest)
//!       | 3 stream message | 4 stream end
//! ```
//!
//! The server answers frames in the order they arrive, so the client matches answers to
//! callers first in, first out: no call ids. The client is the least a multiplexed client
//! needs: one task owning the socket, fed by a channel, answering callers through oneshots,
//! writing whatever is queued in one go. A server stream is a run of stream messages ended by
//! a stream end, with TCP's own backpressure as the only flow control; the client hands the
//! caller the messages of each socket read as one batch.

use std::collections::VecDeque;
use std::net::SocketAddr;

use benches::{EchoMessage, StreamRequest};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::BoxError;

const ECHO: u8 = 1;
const STREAM_OPEN: u8 = 2;
const STREAM_MESSAGE: u8 = 3;
const STREAM_END: u8 = 4;

/// The largest frame either side accepts.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Free space kept in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// A streaming server writes whenever this much is buffered.
const WRITE_CHUNK: usize = 64 * 1024;

/// Accepts connections and serves each on its own task.
pub(super) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(error) = serve_connection(socket).await {
                eprintln!("raw server: connection failed: {error}");
            }
        });
    }
}

/// Reads what has arrived, answers every complete frame in it, writes the answers in one go.
async fn serve_connection(mut socket: TcpStream) -> Result<(), BoxError> {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(WRITE_CHUNK);
    loop {
        while let Some((kind, body)) = take_frame(&mut input)? {
            match kind {
                ECHO => put_frame(&mut output, ECHO, &EchoMessage::decode(body)?)?,
                STREAM_OPEN => {
                    let StreamRequest { count, size } = StreamRequest::decode(body)?;
                    let message = EchoMessage { payload: Bytes::from(vec![0xab; size as usize]) };
                    for _ in 0..count {
                        put_frame(&mut output, STREAM_MESSAGE, &message)?;
                        if output.len() >= WRITE_CHUNK {
                            socket.write_all(&output).await?;
                            output.clear();
                        }
                    }
                    put_frame(&mut output, STREAM_END, &())?;
                }
                other => return Err(format!("unexpected frame kind {other}").into()),
            }
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
        input.reserve(READ_CHUNK);
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

/// Appends one frame of `kind` carrying `message`.
fn put_frame(output: &mut BytesMut, kind: u8, message: &impl Message) -> Result<(), BoxError> {
    let len = 1 + message.encoded_len();
    output.reserve(4 + len);
    output.put_u32(u32::try_from(len)?);
    output.put_u8(kind);
    message.encode(output)?;
    Ok(())
}

/// Takes one complete frame off the front of `input`: its kind and body.
fn take_frame(input: &mut BytesMut) -> Result<Option<(u8, Bytes)>, BoxError> {
    if input.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(format!("bad frame length {len}").into());
    }
    if input.len() < 4 + len {
        input.reserve(4 + len - input.len());
        return Ok(None);
    }
    input.advance(4);
    let mut frame = input.split_to(len).freeze();
    let kind = frame.get_u8();
    Ok(Some((kind, frame)))
}

/// What a caller asks of the connection's task.
enum Request {
    Echo { payload: Bytes, reply: oneshot::Sender<Bytes> },
    Stream { request: StreamRequest, messages: mpsc::Sender<Vec<Bytes>> },
}

/// A caller waiting for its answer, in the order the requests were written.
enum Pending {
    Echo(oneshot::Sender<Bytes>),
    Stream { messages: mpsc::Sender<Vec<Bytes>>, batch: Vec<Bytes> },
}

/// A handle on one connection; clones share it.
#[derive(Clone)]
pub(crate) struct Client {
    requests: mpsc::UnboundedSender<Request>,
}

impl Client {
    pub(super) async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            if let Err(error) = drive(socket, receiver).await {
                eprintln!("raw client: connection failed: {error}");
            }
        });
        Ok(Client { requests })
    }

    pub(super) async fn echo(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Echo { payload, reply }).map_err(|_| "raw connection closed")?;
        Ok(answer.await.map_err(|_| "raw connection closed before the answer")?)
    }

    pub(super) async fn stream(&self, count: u64, size: u64) -> Result<(u64, u64), BoxError> {
        let (messages, mut batches) = mpsc::channel(16);
        let request = StreamRequest { count, size };
        self.requests.send(Request::Stream { request, messages }).map_err(|_| "raw connection closed")?;
        let (mut messages, mut bytes) = (0, 0);
        while let Some(batch) = batches.recv().await {
            messages += batch.len() as u64;
            bytes += batch.iter().map(|payload| payload.len() as u64).sum::<u64>();
        }
        Ok((messages, bytes))
    }
}

/// The connection's task: writes queued requests, reads answers and hands them out, until
/// every handle is gone and nothing is pending, or the connection fails.
async fn drive(socket: TcpStream, mut requests: mpsc::UnboundedReceiver<Request>) -> Result<(), BoxError> {
    let (mut reader, mut writer) = socket.into_split();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(WRITE_CHUNK);
    let mut pending = VecDeque::new();
    let mut open = true;
    while open || !pending.is_empty() || !output.is_empty() {
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            read = reader.read_buf(&mut input) => {
                if read? == 0 {
                    return Err("the server closed the connection".into());
                }
                while let Some((kind, body)) = take_frame(&mut input)? {
                    deliver(kind, body, &mut pending).await?;
                }
                // A stream's messages from this read go to the caller as one batch.
                if let Some(Pending::Stream { messages, batch }) = pending.front_mut()
                    && !batch.is_empty()
                {
                    // A caller that went away no longer wants them.
                    let _ = messages.send(std::mem::take(batch)).await;
                }
            }
            request = requests.recv(), if open => match request {
                Some(request) => {
                    queue(request, &mut output, &mut pending)?;
                    while let Ok(request) = requests.try_recv() {
                        queue(request, &mut output, &mut pending)?;
                    }
                }
                None => open = false,
            },
            written = writer.write_buf(&mut output), if !output.is_empty() => {
                written?;
            }
        }
    }
    Ok(())
}

/// Writes a request into `output` and remembers who waits for its answer.
fn queue(request: Request, output: &mut BytesMut, pending: &mut VecDeque<Pending>) -> Result<(), BoxError> {
    match request {
        Request::Echo { payload, reply } => {
            put_frame(output, ECHO, &EchoMessage { payload })?;
            pending.push_back(Pending::Echo(reply));
        }
        Request::Stream { request, messages } => {
            put_frame(output, STREAM_OPEN, &request)?;
            pending.push_back(Pending::Stream { messages, batch: Vec::new() });
        }
    }
    Ok(())
}

/// Hands one answer frame to the caller first in line.
async fn deliver(kind: u8, body: Bytes, pending: &mut VecDeque<Pending>) -> Result<(), BoxError> {
    match (kind, pending.front_mut()) {
        (ECHO, Some(Pending::Echo(_))) => {
            let message = EchoMessage::decode(body)?;
            if let Some(Pending::Echo(reply)) = pending.pop_front() {
                // A caller that went away no longer wants it.
                let _ = reply.send(message.payload);
            }
        }
        (STREAM_MESSAGE, Some(Pending::Stream { batch, .. })) => {
            batch.push(EchoMessage::decode(body)?.payload);
        }
        (STREAM_END, Some(Pending::Stream { messages, batch })) => {
            if !batch.is_empty() {
                let _ = messages.send(std::mem::take(batch)).await;
            }
            // Dropping the sender ends the caller's stream.
            pending.pop_front();
        }
        (kind, _) => return Err(format!("unexpected frame kind {kind} for the call in line").into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_waits_until_complete() {
        let mut wire = BytesMut::new();
        put_frame(&mut wire, ECHO, &EchoMessage { payload: Bytes::from_static(b"hello") }).expect("encodes");
        let complete = wire.clone();
        let mut partial = BytesMut::from(&complete[..complete.len() - 1]);
        assert!(take_frame(&mut partial).expect("no error").is_none());
        let (kind, body) = take_frame(&mut wire).expect("no error").expect("a frame");
        assert_eq!(kind, ECHO);
        assert_eq!(EchoMessage::decode(body).expect("decodes").payload, Bytes::from_static(b"hello"));
        assert!(wire.is_empty());
    }

    #[test]
    fn an_oversized_length_is_rejected() {
        let mut wire = BytesMut::new();
        wire.put_u32(MAX_FRAME as u32 + 1);
        assert!(take_frame(&mut wire).is_err());
    }
}
