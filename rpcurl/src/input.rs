//! Where requests come from: the `-d` argument, a file, or stdin, as a sequence of JSON
//! values (whitespace or newlines between them). Stdin is read as the call goes, so a
//! bidirectional call can answer each line as it is typed.

use serde_json::Value;
use tokio::sync::mpsc;

use crate::Failure;

/// How many requests read from stdin may wait to be sent: reading pauses while the server
/// is slow to take them.
const STDIN_BACKLOG: usize = 16;

/// The requests of one call, in order.
pub(crate) enum Requests {
    /// Given in full (the argument, a file), parsed one by one as they are sent.
    Given { values: std::vec::IntoIter<Result<Value, String>> },
    /// Read from stdin by a thread of its own, as they come.
    Stdin(mpsc::Receiver<Result<Value, String>>),
}

impl Requests {
    /// The requests `-d` names: its JSON, `@` for stdin, `@FILE` for a file. Without `-d`,
    /// stdin for a method that takes a stream of requests, else one empty request.
    pub(crate) fn from_data(data: Option<&str>, stream_in: bool) -> Result<Requests, Failure> {
        match data {
            None if stream_in => Ok(Requests::Stdin(stdin_values())),
            None => Ok(Requests::given("{}")),
            Some("@") => Ok(Requests::Stdin(stdin_values())),
            Some(file) if file.starts_with('@') => {
                let path = &file[1..];
                let text = std::fs::read_to_string(path)
                    .map_err(|err| Failure::Local(format!("cannot read {path}: {err}")))?;
                Ok(Requests::given(&text))
            }
            Some(json) => Ok(Requests::given(json)),
        }
    }

    fn given(text: &str) -> Requests {
        let values: Vec<Result<Value, String>> = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .map(|v| v.map_err(|e| e.to_string()))
            .collect();
        Requests::Given { values: values.into_iter() }
    }

    /// The next request, or why it could not be read.
    pub(crate) async fn next(&mut self) -> Option<Result<Value, String>> {
        match self {
            Requests::Given { values } => values.next(),
            Requests::Stdin(receiver) => receiver.recv().await,
        }
    }
}

/// Reads JSON values from stdin on a thread of its own (stdin has no portable non-blocking
/// read), handing them over as they are complete; stops at the end or the first error.
fn stdin_values() -> mpsc::Receiver<Result<Value, String>> {
    let (sender, receiver) = mpsc::channel(STDIN_BACKLOG);
    std::thread::spawn(move || {
        let stdin = std::io::stdin().lock();
        for value in serde_json::Deserializer::from_reader(stdin).into_iter::<Value>() {
            let value = value.map_err(|err| err.to_string());
            let failed = value.is_err();
            if sender.blocking_send(value).is_err() || failed {
                break;
            }
        }
    });
    receiver
}
