//! The PostgreSQL wire protocol, as far as pals frames it itself: its requests (a prepared
//! statement's Bind/Execute/Sync, a simple Query) and their answers ([`Reply`]), and the
//! driver's typed error for an `ErrorResponse` ([`error_of`]).

use std::io;

use crate::error::PgError;

/// `ReadyForQuery`: the last message of every answer.
pub(crate) const READY: u8 = b'Z';

/// The length of the whole message at the start of `buf`, if all of it is there.
pub(crate) fn whole(buf: &[u8]) -> Option<usize> {
    let header = buf.get(1..5)?;
    let len = 1 + u32::from_be_bytes(header.try_into().ok()?) as usize;
    (buf.len() >= len).then_some(len)
}

/// True for a message the server may send at any time, not part of an answer: a notice, a
/// notification, a parameter's new value.
pub(crate) fn is_async(tag: u8) -> bool {
    matches!(tag, b'N' | b'A' | b'S')
}

/// True for a frontend message after which the server answers with `ReadyForQuery`:
/// `Sync` and `Query`.
pub(crate) fn ends_request(tag: u8) -> bool {
    matches!(tag, b'S' | b'Q')
}

/// One value of a row in binary format, as the lock statements return them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    /// Of another type (not one of the lock statements').
    Other,
}

/// An answer, read message by message: the last row's first value (binary), the rows as
/// text (a simple query's, when asked for), and the error if the statement failed.
#[derive(Default, Debug)]
pub(crate) struct Reply {
    want_rows: bool,
    /// The first value of the last row.
    pub(crate) value: Value,
    /// The rows (text values), if asked for.
    pub(crate) rows: Vec<Vec<Option<String>>>,
    /// How many rows came.
    pub(crate) row_count: usize,
    /// The `ErrorResponse`'s body, if the statement failed.
    pub(crate) error: Option<Vec<u8>>,
}

/// A whole answer.
pub(crate) type Answer = Reply;

impl Reply {
    pub(crate) fn reset(&mut self, want_rows: bool) {
        self.want_rows = want_rows;
        self.value = Value::Null;
        self.rows.clear();
        self.row_count = 0;
        self.error = None;
    }

    pub(crate) fn take(&mut self) -> Reply {
        let want_rows = self.want_rows;
        let reply = std::mem::take(self);
        self.want_rows = want_rows;
        reply
    }

    pub(crate) fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Reads one message of the answer.
    pub(crate) fn read(&mut self, message: &[u8]) {
        let body = &message[5..];
        match message[0] {
            b'D' => {
                self.row_count += 1;
                let mut values = Values {
                    rest: body.get(2..).unwrap_or_default(),
                };
                if self.want_rows {
                    let row = values
                        .by_ref()
                        .map(|value| value.map(|bytes| String::from_utf8_lossy(bytes).into()))
                        .collect();
                    self.rows.push(row);
                } else {
                    self.value = match values.next() {
                        None | Some(None) => Value::Null,
                        Some(Some(&[byte])) => Value::Bool(byte != 0),
                        Some(Some(bytes)) => bytes
                            .try_into()
                            .map_or(Value::Other, |bytes| Value::Int(i64::from_be_bytes(bytes))),
                    };
                }
            }
            b'E' if self.error.is_none() => self.error = Some(body.to_vec()),
            _ => {}
        }
    }
}

/// The values of a `DataRow`: `None` for NULL.
struct Values<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Values<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let len = i32::from_be_bytes(self.rest.get(..4)?.try_into().ok()?);
        self.rest = &self.rest[4..];
        if len < 0 {
            return Some(None);
        }
        let len = (len as usize).min(self.rest.len());
        let (value, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Some(value))
    }
}

/// Appends a message: its tag, its length, and `body`'s parts.
fn message(out: &mut Vec<u8>, tag: u8, body: &[&[u8]]) {
    let len: usize = 4 + body.iter().map(|part| part.len()).sum::<usize>();
    out.push(tag);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in body {
        out.extend_from_slice(part);
    }
}

/// Appends Bind, Execute and Sync for the prepared statement `statement` with `params`
/// (text), results in binary.
pub(crate) fn execute(out: &mut Vec<u8>, statement: &str, params: &[&str]) {
    let len: usize =
        params.iter().map(|param| 4 + param.len()).sum::<usize>() + statement.len() + 2 + 2 + 2 + 4;
    out.push(b'B');
    out.extend_from_slice(&((4 + len) as u32).to_be_bytes());
    out.push(0); // the unnamed portal
    out.extend_from_slice(statement.as_bytes());
    out.push(0);
    out.extend_from_slice(&0u16.to_be_bytes()); // parameters in text
    out.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for param in params {
        out.extend_from_slice(&(param.len() as u32).to_be_bytes());
        out.extend_from_slice(param.as_bytes());
    }
    out.extend_from_slice(&1u16.to_be_bytes()); // one result format for all: binary
    out.extend_from_slice(&1u16.to_be_bytes());
    message(out, b'E', &[&[0], &0u32.to_be_bytes()]);
    sync(out);
}

/// Appends a Parse of `text` as the prepared statement `name` (its parameters' types
/// inferred).
pub(crate) fn parse(out: &mut Vec<u8>, name: &str, text: &str) {
    let body: [&[u8]; 5] = [
        name.as_bytes(),
        &[0],
        text.as_bytes(),
        &[0],
        &0u16.to_be_bytes(),
    ];
    message(out, b'P', &body);
}

/// Appends a Sync.
pub(crate) fn sync(out: &mut Vec<u8>) {
    message(out, b'S', &[]);
}

/// Appends a simple Query of `sql`.
pub(crate) fn query(out: &mut Vec<u8>, sql: &str) {
    message(out, b'Q', &[sql.as_bytes(), &[0]]);
}

/// The driver's error for an `ErrorResponse` body (`None`: the connection closed), as
/// tokio-postgres would have returned it: the answer is replayed to a tokio-postgres client
/// over an in-memory stream, which parses it (the driver's errors cannot be made otherwise).
pub(crate) async fn error_of(body: Option<&[u8]>) -> PgError {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client_side, mut server) = tokio::io::duplex(4096);
    let serve = async move {
        let mut buf = [0u8; 1024];
        // The startup message, then: authenticated, ready.
        let _ = server.read(&mut buf).await?;
        let mut answer = Vec::new();
        message(&mut answer, b'R', &[&0u32.to_be_bytes()]);
        message(&mut answer, READY, &[b"I"]);
        server.write_all(&answer).await?;
        let _ = server.read(&mut buf).await?; // the query
        if let Some(body) = body {
            answer.clear();
            message(&mut answer, b'E', &[body]);
            message(&mut answer, READY, &[b"I"]);
            server.write_all(&answer).await?;
            let _ = server.read(&mut buf).await?; // until the client goes
        }
        Ok::<_, io::Error>(())
    };
    let replay = async {
        let config = tokio_postgres::Config::new().user("pals").to_owned();
        let (client, connection) = config
            .connect_raw(client_side, tokio_postgres::NoTls)
            .await?;
        let query = client.simple_query("");
        tokio::pin!(connection);
        tokio::select! {
            answer = query => answer.map(|_| ()),
            _ = &mut connection => client.simple_query("").await.map(|_| ()),
        }
    };
    let (replayed, _) = tokio::join!(replay, serve);
    // The replay always ends in an error: the one replayed, or the stream's end.
    replayed
        .err()
        .unwrap_or_else(tokio_postgres::Error::__private_api_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of `bytes`, as (tag, body).
    fn messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut found = Vec::new();
        while let Some(len) = whole(bytes) {
            found.push((bytes[0], bytes[5..len].to_vec()));
            bytes = &bytes[len..];
        }
        assert!(bytes.is_empty(), "a partial message is left: {bytes:?}");
        found
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        for value in values {
            match value {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    body.extend_from_slice(bytes);
                }
            }
        }
        let mut out = Vec::new();
        message(&mut out, b'D', &[&body]);
        out
    }

    #[test]
    fn a_message_is_whole_only_once_all_of_it_is_there() {
        let mut out = Vec::new();
        message(&mut out, READY, &[b"I"]);
        assert_eq!(out, [b'Z', 0, 0, 0, 5, b'I']);
        for cut in 0..out.len() {
            assert_eq!(whole(&out[..cut]), None, "cut at {cut}");
        }
        assert_eq!(whole(&out), Some(6));
        out.extend_from_slice(b"Z\0");
        assert_eq!(
            whole(&out),
            Some(6),
            "the next message's beginning is not counted"
        );
    }

    #[test]
    fn execute_frames_bind_execute_and_sync() {
        let mut out = Vec::new();
        execute(&mut out, "pals1_try_x", &["-42", "mark"]);
        let found = messages(&out);
        let tags: Vec<u8> = found.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(tags, b"BES");
        let mut bind = b"\0pals1_try_x\0".to_vec();
        bind.extend_from_slice(&[0, 0, 0, 2]); // no format codes (text), two parameters
        bind.extend_from_slice(&[0, 0, 0, 3]);
        bind.extend_from_slice(b"-42");
        bind.extend_from_slice(&[0, 0, 0, 4]);
        bind.extend_from_slice(b"mark");
        bind.extend_from_slice(&[0, 1, 0, 1]); // one result format: binary
        assert_eq!(found[0].1, bind);
        assert_eq!(found[1].1, [0, 0, 0, 0, 0]);
        assert!(found[2].1.is_empty());
        assert!(ends_request(b'S') && !ends_request(b'B') && !ends_request(b'E'));
    }

    #[test]
    fn parse_and_query_are_framed_with_their_texts() {
        let mut out = Vec::new();
        parse(&mut out, "s", "SELECT $1");
        query(&mut out, "SELECT 1");
        let found = messages(&out);
        assert_eq!(found[0], (b'P', b"s\0SELECT $1\0\0\0".to_vec()));
        assert_eq!(found[1], (b'Q', b"SELECT 1\0".to_vec()));
        assert!(ends_request(b'Q'));
    }

    #[test]
    fn a_reply_reads_the_last_rows_first_value_in_binary() {
        let mut reply = Reply::default();
        reply.reset(false);
        for message in [data_row(&[Some(&[1])]), data_row(&[Some(&[0])])] {
            reply.read(&message);
        }
        assert_eq!((reply.value, reply.row_count), (Value::Bool(false), 2));
        reply.reset(false);
        reply.read(&data_row(&[Some(&7i64.to_be_bytes())]));
        assert_eq!(reply.value, Value::Int(7));
        reply.reset(false);
        reply.read(&data_row(&[None]));
        assert_eq!(reply.value, Value::Null);
        reply.read(&data_row(&[Some(b"abc")]));
        assert_eq!(reply.value, Value::Other);
        assert!(reply.rows.is_empty(), "rows are kept only when asked for");
    }

    #[test]
    fn a_reply_keeps_text_rows_and_the_first_error() {
        let mut reply = Reply::default();
        reply.reset(true);
        reply.read(&data_row(&[Some(b"12"), None]));
        let mut error = Vec::new();
        message(&mut error, b'E', &[b"first"]);
        reply.read(&error);
        let mut second = Vec::new();
        message(&mut second, b'E', &[b"second"]);
        reply.read(&second);
        assert_eq!(reply.rows, vec![vec![Some("12".to_string()), None]]);
        assert_eq!(reply.error.as_deref(), Some(&b"first"[..]));
        let taken = reply.take();
        assert!(taken.failed() && !reply.failed() && reply.rows.is_empty());
    }

    #[tokio::test]
    async fn an_error_response_becomes_the_drivers_database_error() {
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "57014"),
            (b'M', "canceling statement due to user request"),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let error = error_of(Some(&body)).await;
        let db = error.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), "57014");
        assert_eq!(db.message(), "canceling statement due to user request");
        assert_eq!(db.severity(), "ERROR");
        assert!(!error.is_closed());
    }

    #[tokio::test]
    async fn no_answer_becomes_the_drivers_closed_error() {
        let error = error_of(None).await;
        assert!(error.is_closed(), "{error}");
        assert!(error.as_db_error().is_none());
    }
}
