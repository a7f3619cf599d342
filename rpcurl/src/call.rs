//! `call`: one call of any kind, its requests read as JSON and its responses written as
//! JSON, one object per line, as they arrive.

use std::future::poll_fn;

use bytes::Bytes;
use rpc_core::codec::BytesCodec;
use rpc_core::method::MethodKind;
use rpc_core::{Channel, Metadata, StreamSender, Streaming};
use rpc_dynamic::{JsonOptions, Method, json};

use crate::input::Requests;
use crate::{Failure, Session, print_lines};

/// Makes the call `method` through `channel`, with the requests `data` names.
pub(crate) async fn run(
    session: &Session,
    channel: &Channel,
    method: &Method,
    data: Option<&str>,
) -> Result<(), Failure> {
    let requests = Requests::from_data(data, method.descriptor().is_client_streaming())?;
    let mut call =
        Call { method, requests, sent: 0, options: session.json_options(), verbose: session.options.verbose };
    let metadata = session.metadata.clone();
    let path = method.path();
    match method.kind() {
        MethodKind::Unary => {
            let request = call.single().await?;
            let response = channel
                .unary::<Bytes, Bytes, BytesCodec>(path, request)
                .with_metadata(metadata)
                .full()
                .await?;
            call.show_metadata(response.metadata());
            call.print(response.into_inner())
        }
        MethodKind::ServerStreaming => {
            let request = call.single().await?;
            let mut responses = channel
                .server_streaming::<Bytes, Bytes, BytesCodec>(path, request)
                .with_metadata(metadata)
                .await?;
            while let Some(body) = responses.message().await? {
                call.print(body)?;
            }
            call.show_metadata(responses.trailers());
            Ok(())
        }
        MethodKind::ClientStreaming => {
            let (sender, response) =
                channel.client_streaming::<Bytes, Bytes, BytesCodec>(path).with_metadata(metadata).await?;
            let mut response = std::pin::pin!(response);
            let sending = call.send_all(sender);
            tokio::select! {
                // The server may answer (or fail) before every request is sent.
                answer = &mut response => {
                    let answer = answer?;
                    call.show_metadata(response.trailers());
                    return call.print(answer);
                }
                sent = sending => sent?,
            }
            let answer = (&mut response).await?;
            call.show_metadata(response.trailers());
            call.print(answer)
        }
        MethodKind::BidiStreaming => {
            let (sender, responses) =
                channel.bidi_streaming::<Bytes, Bytes, BytesCodec>(path).with_metadata(metadata).await?;
            call.exchange(sender, responses).await
        }
    }
}

/// One call under way: where its requests come from, and how its responses are written.
struct Call<'a> {
    method: &'a Method,
    requests: Requests,
    /// Requests read so far, to name the one that is wrong.
    sent: usize,
    options: JsonOptions,
    verbose: bool,
}

impl Call<'_> {
    /// The next request, encoded; `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, Failure>> {
        let value = self.requests.next().await?;
        self.sent += 1;
        let n = self.sent;
        Some(value.map_err(|err| Failure::Local(format!("request {n}: {err}"))).and_then(|value| {
            json::encode_value(&self.method.input(), value).map_err(|err| {
                Failure::Local(format!("request {n} ({}): {err}", self.method.input().full_name()))
            })
        }))
    }

    /// The one request of a unary or server-streaming call.
    async fn single(&mut self) -> Result<Bytes, Failure> {
        let first = self.next().await.unwrap_or_else(|| Err(Failure::Local("no request given".into())))?;
        if self.next().await.is_some() {
            return Err(Failure::Local(format!(
                "{} takes one request; give a single JSON object",
                self.method.path()
            )));
        }
        Ok(first)
    }

    /// Sends every request, then closes the stream. A send that fails with a status means
    /// the server ended the call: its status comes with the response, so sending just stops.
    async fn send_all(&mut self, mut sender: StreamSender<Bytes>) -> Result<(), Failure> {
        while let Some(request) = self.next().await {
            if sender.send(request?).await.is_err() {
                return Ok(());
            }
        }
        sender.close();
        Ok(())
    }

    /// A bidirectional call: requests go out as they are read while responses are written
    /// as they come, until the server ends the call.
    async fn exchange(
        &mut self,
        sender: StreamSender<Bytes>,
        mut responses: Streaming<Bytes>,
    ) -> Result<(), Failure> {
        let (method, options, verbose) = (self.method, self.options, self.verbose);
        let mut sending = std::pin::pin!(self.send_all(sender));
        let mut sent_all = false;
        loop {
            tokio::select! {
                sent = &mut sending, if !sent_all => {
                    sent?;
                    sent_all = true;
                }
                message = poll_fn(|cx| responses.poll_message(cx)) => match message? {
                    Some(body) => print(method, &options, body)?,
                    None => break,
                },
            }
        }
        if verbose {
            show(responses.trailers());
        }
        Ok(())
    }

    fn print(&self, body: Bytes) -> Result<(), Failure> {
        print(self.method, &self.options, body)
    }

    fn show_metadata(&self, metadata: &Metadata) {
        if self.verbose {
            show(metadata);
        }
    }
}

/// Writes a response as one line of JSON.
fn print(method: &Method, options: &JsonOptions, body: Bytes) -> Result<(), Failure> {
    let line = method
        .response_to_json(body, options)
        .map_err(|err| Failure::Local(format!("the response: {err}")))?;
    print_lines(&[line])
}

/// Writes metadata to stderr, an entry per line.
fn show(metadata: &Metadata) {
    for (key, value) in metadata.iter() {
        eprintln!("< {key}: {}", String::from_utf8_lossy(value));
    }
}
