//! The stored form of a response (a persisted format).
//!
//! The layer records a response as a raw payload ([`payload::RAW`](crate::payload::RAW),
//! written with [`payload::encode_raw`](crate::payload::encode_raw)) whose content is this
//! format. Every integer is big-endian.
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `0x01` |
//! | 1 | flags: bit 0 set means *not replayable* (the body was over the storage limit and is not stored); other bits are 0 |
//! | 2 | status code |
//! | 2 | number of headers |
//! | per header: 2, n | name length, name (lowercase ASCII) |
//! | per header: 4, n | value length, value bytes |
//! | 8, n | body length, body bytes (length 0 when not replayable) |
//!
//! Nothing follows the body. A record that breaks any of these rules (an unknown version or
//! flag, a length past the end, bytes after the body, a status outside 100 to 999, a header
//! name or value `http` refuses) is unreadable: the layer answers 500 rather than run the
//! request a second time. Pinned by golden tests; a change of layout needs a new version byte.
//!
//! ```
//! use bytes::Bytes;
//! use http::{HeaderMap, HeaderValue, StatusCode, header};
//! use idempotent_core::http::StoredResponse;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
//! let stored = StoredResponse::new(StatusCode::CREATED, headers, Bytes::from_static(b"ok"));
//! let bytes = stored.encode();
//! assert_eq!(&bytes[..6], b"\x01\x00\x00\xc9\x00\x01");
//! assert_eq!(StoredResponse::decode(&bytes)?, stored);
//! # Ok::<(), idempotent_core::http::StoredFormatError>(())
//! ```

use std::fmt;

use bytes::{BufMut, Bytes};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 0x01;
const NOT_REPLAYABLE: u8 = 0x01;

/// The response headers replayed unless the layer is told otherwise: those that describe the
/// stored body or the resource it created.
pub const DEFAULT_REPLAYED_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::CONTENT_DISPOSITION,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::LINK,
];

/// Whether a header may never be replayed: it belongs to one response (`set-cookie`, `date`),
/// to one connection (hop-by-hop headers), to the moment (rate limits, `retry-after`), or is
/// recomputed from the body (`content-length`).
pub fn is_never_replayed(name: &HeaderName) -> bool {
    const NEVER: &[HeaderName] = &[
        header::SET_COOKIE,
        header::DATE,
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::RETRY_AFTER,
        header::AGE,
        header::EXPIRES,
    ];
    let text = name.as_str();
    NEVER.contains(name)
        || text == "keep-alive"
        || text == "proxy-connection"
        || text.starts_with("ratelimit")
        || text.starts_with("x-ratelimit")
        || text.starts_with("x-rate-limit")
        || text == super::IDEMPOTENT_REPLAYED.as_str()
}

/// A response as the layer stores it: status, the replayed headers and the body, or the
/// marker of a response that was too large to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    replayable: bool,
}

impl StoredResponse {
    /// A response to replay.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        StoredResponse {
            status,
            headers,
            body,
            replayable: true,
        }
    }

    /// The record of a response whose body was over the storage limit: it was delivered once
    /// and is not kept, and a duplicate is told so instead of running again.
    pub fn not_replayable(status: StatusCode, headers: HeaderMap) -> Self {
        StoredResponse {
            status,
            headers,
            body: Bytes::new(),
            replayable: false,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The replayed headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body (empty when not replayable).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the response can be replayed.
    pub fn is_replayable(&self) -> bool {
        self.replayable
    }

    /// Splits into status, headers and body.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }

    /// The stored bytes (the content of the raw payload).
    pub fn encode(&self) -> Vec<u8> {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(name, value)| 6 + name.as_str().len() + value.len())
            .sum();
        let mut out = Vec::with_capacity(14 + headers_len + self.body.len());
        out.put_u8(FORMAT_VERSION);
        out.put_u8(if self.replayable { 0 } else { NOT_REPLAYABLE });
        out.put_u16(self.status.as_u16());
        // `http` bounds these widths: a `HeaderMap` holds at most 32,768 entries and a
        // header name at most 65,535 bytes; a value over 4 GiB is not a header any server
        // accepts.
        out.put_u16(self.headers.len() as u16);
        for (name, value) in &self.headers {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        out
    }

    /// Reads stored bytes back; see the module docs for what is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoredFormatError> {
        let mut reader = Reader(bytes);
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(StoredFormatError(format!(
                "unknown stored response version {version:#04x}"
            )));
        }
        let flags = reader.u8()?;
        if flags & !NOT_REPLAYABLE != 0 {
            return Err(StoredFormatError(format!("unknown flags {flags:#04x}")));
        }
        let status = StatusCode::from_u16(reader.u16()?)
            .map_err(|_| StoredFormatError("status code out of range".to_owned()))?;
        let count = reader.u16()?;
        let mut headers = HeaderMap::with_capacity(usize::from(count));
        for _ in 0..count {
            let name_len = usize::from(reader.u16()?);
            let name = HeaderName::from_bytes(reader.take(name_len)?)
                .map_err(|_| StoredFormatError("invalid header name".to_owned()))?;
            let value_len = reader.u32()? as usize;
            let value = HeaderValue::from_bytes(reader.take(value_len)?)
                .map_err(|_| StoredFormatError("invalid header value".to_owned()))?;
            headers.append(name, value);
        }
        let body_len = usize::try_from(reader.u64()?)
            .map_err(|_| StoredFormatError("body length out of range".to_owned()))?;
        let body = Bytes::copy_from_slice(reader.take(body_len)?);
        if !reader.0.is_empty() {
            return Err(StoredFormatError("bytes after the body".to_owned()));
        }
        let replayable = flags & NOT_REPLAYABLE == 0;
        if !replayable && !body.is_empty() {
            return Err(StoredFormatError(
                "a response marked not replayable has a body".to_owned(),
            ));
        }
        Ok(StoredResponse {
            status,
            headers,
            body,
            replayable,
        })
    }
}

/// Why stored bytes are not a readable [`StoredResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFormatError(String);

impl fmt::Display for StoredFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable stored response: {}", self.0)
    }
}

impl std::error::Error for StoredFormatError {}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], StoredFormatError> {
        if self.0.len() < len {
            return Err(StoredFormatError("truncated".to_owned()));
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoredFormatError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, StoredFormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, StoredFormatError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, StoredFormatError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, StoredFormatError> {
        self.array().map(u64::from_be_bytes)
    }
}
