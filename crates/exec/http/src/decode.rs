//! Decoding compressed response bodies before the broker scrubs them (T24), with the decoded size
//! capped at the handle's `max_response_bytes` (T20).
//!
//! The broker asks for `gzip, deflate, br, zstd` itself and decodes whatever `Content-Encoding`
//! says, in reverse order of application; anything it cannot decode is refused, never returned
//! as is, since the scrubber cannot see a secret inside compressed bytes. A body whose media type
//! says it is compressed (`Content-Type: application/gzip`, see [`media_coding_of`]) is decoded
//! the same way, after the content codings: the result holds the decompressed content, and a body
//! that does not decode as its type says is refused with `undecodable-response` too.
//!
//! Two caps bound the work, both derived from the handle's `max_response_bytes` (`cap`):
//! - the **decoded** bytes kept: at most `cap` (one byte more is read to tell a cut); decoding is
//!   pulled by the reader of the decoded bytes and stops there, so a decompression bomb costs at
//!   most the cap plus each decoder's window, never its full expansion;
//! - the **compressed input** read: at most [`max_compressed_input`]`(cap)` bytes (the cap plus an
//!   eighth, plus 64 KiB). Real compressed data that decodes to at most `cap + 1` bytes is never
//!   longer than that (stored blocks and frame overhead cost well under an eighth); a body that
//!   goes on past it without producing output (empty gzip members, zstd skippable frames, empty
//!   deflate blocks) is refused with `undecodable-response` instead of being read to its end.
//!
//! The decoders are synchronous `Read` chains, so they run on a blocking thread fed with the
//! body's chunks through a small bounded channel; dropping the receiver (cap reached, or a
//! decode error) stops the network read as well.

use airlock_core::{CallError, ErrorCode};
use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_ENCODING, CONTENT_TYPE, TRANSFER_ENCODING};
use std::io::{self, Cursor, Read};
use tokio::sync::mpsc;

/// What the broker sends as `Accept-Encoding`: exactly the codings [`decode_capped`] handles.
pub(crate) const ACCEPT_ENCODING_VALUE: &str = "gzip, deflate, br, zstd";

/// Most content codings stacked on one body. Real servers apply one; a few layers leave room
/// for a proxy that compresses again, more is only ever an attack on the decoder.
pub(crate) const MAX_LAYERS: usize = 3;

/// Largest zstd window accepted: RFC 9659 limits `Content-Encoding: zstd` to 8 MiB windows, and
/// the decoder keeps up to a window of output before it hands any out.
const ZSTD_MAX_WINDOW: u64 = 8 * 1024 * 1024;

/// Chunks in flight between the network and the decoder thread.
const CHANNEL_DEPTH: usize = 4;

/// The most compressed bytes read for a body whose decoded size is capped at `cap`: the cap, an
/// eighth more, and 64 KiB (see the module docs). Past it the body is refused.
pub(crate) fn max_compressed_input(cap: usize) -> usize {
    cap.saturating_add(cap / 8).saturating_add(64 * 1024)
}

/// One content coding airlock decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    /// zlib-wrapped as RFC 9110 says, or raw deflate as some servers send; told apart by the
    /// zlib header.
    Deflate,
    Brotli,
    Zstd,
}

/// One decoding step: a coding, and whether it may be skipped when the input does not start
/// with the coding's magic number (a media type that repeats the content coding right under
/// it: `Content-Encoding: gzip` on a `.gz` file is often the file itself, not gzip twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layer {
    pub(crate) coding: Coding,
    pub(crate) unless_no_magic: bool,
}

fn undecodable(detail: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::UndecodableResponse).detail(detail)
}

/// The coding a media type says its body is compressed with: `application/gzip` and
/// `application/x-gzip` (RFC 6713 and its legacy name), `application/zlib` (RFC 6713),
/// `application/zstd` (RFC 8878) and `application/x-brotli` (unregistered, but what servers send
/// for `.br` files; RFC 7932 registers only the `br` content coding). Parameters and case are
/// ignored; `value` may hold several comma-separated types (any compressed one counts).
/// Archives (zip, tar, xz, bzip2, 7z) are not decoded: see the crate's docs.
pub(crate) fn media_coding_of(value: &str) -> Option<Coding> {
    value.split(',').find_map(|v| {
        let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/gzip" | "application/x-gzip" => Some(Coding::Gzip),
            "application/zlib" => Some(Coding::Deflate),
            "application/zstd" => Some(Coding::Zstd),
            "application/x-brotli" => Some(Coding::Brotli),
            _ => None,
        }
    })
}

/// The coding the response's `Content-Type` says its body is compressed with, if any. A value
/// that is not text counts as none (it names no type airlock knows).
fn media_coding(headers: &HeaderMap) -> Option<Coding> {
    headers
        .get_all(CONTENT_TYPE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(media_coding_of)
}

/// The layers to undo, in decoding order: the content codings in reverse of the order they are
/// listed in, then the compression the media type names ([`media_coding_of`]). `identity` is
/// skipped; an unknown coding, a non-text value, too many layers or a transfer coding other than
/// `chunked` is refused. Header values never go into the error: an upstream that echoes a
/// credential may echo it there too.
pub(crate) fn codings(headers: &HeaderMap) -> Result<Vec<Layer>, CallError> {
    let mut layers: Vec<Layer> = content_codings(headers)?
        .into_iter()
        .map(|coding| Layer { coding, unless_no_magic: false })
        .collect();
    if let Some(coding) = media_coding(headers) {
        // The same coding applied as a content coding right over the media type is usually the
        // file itself served with a content coding label: decode it again only if what the
        // content coding produced starts like that coding (brotli has no magic number: always).
        let repeats = layers.last().is_some_and(|l| l.coding == coding);
        layers.push(Layer { coding, unless_no_magic: repeats && coding != Coding::Brotli });
    }
    Ok(layers)
}

/// The content codings to undo, in decoding order.
fn content_codings(headers: &HeaderMap) -> Result<Vec<Coding>, CallError> {
    // hyper undoes only `chunked`; a `gzip` transfer coding would otherwise pass through raw.
    for v in headers.get_all(TRANSFER_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| undecodable("Transfer-Encoding is not text"))?;
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !t.eq_ignore_ascii_case("chunked") && !t.eq_ignore_ascii_case("identity") {
                return Err(undecodable("a transfer coding other than chunked"));
            }
        }
    }
    let mut applied = Vec::new();
    for v in headers.get_all(CONTENT_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| undecodable("Content-Encoding is not text"))?;
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let c = match t.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(undecodable("an unknown content coding")),
            };
            applied.push(c);
            if applied.len() > MAX_LAYERS {
                return Err(undecodable(format!(
                    "more than {MAX_LAYERS} stacked content codings"
                )));
            }
        }
    }
    applied.reverse();
    Ok(applied)
}

/// Reads the body through the decoders, keeping at most `cap` decoded bytes.
///
/// `codings` is what [`codings`] made of the headers, refusal included: an empty body is
/// returned as is, whatever the headers claim (a `HEAD`, a 204 or a 304 carries
/// `Content-Encoding` with nothing to decode). A transport error wins over the decode error it
/// causes (the caller maps it to its usual code).
pub(crate) async fn read_decoded(
    resp: &mut reqwest::Response,
    codings: Result<Vec<Layer>, CallError>,
    cap: usize,
) -> Result<Result<(Vec<u8>, bool), CallError>, reqwest::Error> {
    let first = loop {
        match resp.chunk().await? {
            None => return Ok(Ok((Vec::new(), false))),
            Some(c) if c.is_empty() => continue,
            Some(c) => break c,
        }
    };
    let codings = match codings {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Broke>>(CHANNEL_DEPTH);
    let decoder =
        tokio::task::spawn_blocking(move || decode_capped(ChannelReader::new(rx), &codings, cap));
    let mut transport = None;
    let mut next = Some(first);
    let mut room = max_compressed_input(cap);
    while let Some(chunk) = next.take() {
        if chunk.len() > room {
            // Past the compressed-input cap: the decoder fails on the next read it cannot serve.
            let _ = tx.send(Ok(chunk.slice(..room))).await;
            let _ = tx.send(Err(Broke::OverCap)).await;
            break;
        }
        room -= chunk.len();
        // A closed channel means the decoder is done (cap reached or failed): stop reading.
        if tx.send(Ok(chunk)).await.is_err() {
            break;
        }
        // The decoder may reach the cap while the upstream is still sending (or stalling):
        // return what it has instead of waiting for the next chunk.
        let read = tokio::select! {
            r = resp.chunk() => r,
            _ = tx.closed() => break,
        };
        match read {
            Ok(c) => next = c,
            Err(e) => {
                // Tell the decoder the stream broke, so a cut at a member boundary is not read
                // as a clean end.
                let _ = tx.send(Err(Broke::Transport)).await;
                transport = Some(e);
            }
        }
    }
    drop(tx);
    let decoded = decoder.await.unwrap_or_else(|_| {
        Err(CallError::new(ErrorCode::Internal).detail("the response decoder panicked"))
    });
    match transport {
        Some(e) => Err(e),
        None => Ok(decoded),
    }
}

/// Runs the decoder chain over `src` and keeps at most `cap` decoded bytes; `truncated` when the
/// decoded body goes on past the cap. Reads one byte past the cap at most, so a bomb stops there.
pub(crate) fn decode_capped(
    src: impl Read + Send + 'static,
    layers: &[Layer],
    cap: usize,
) -> Result<(Vec<u8>, bool), CallError> {
    let mut reader: Box<dyn Read + Send> = Box::new(src);
    for l in layers {
        reader = if l.unless_no_magic {
            Box::new(IfMagic::Pending(l.coding, Some(reader)))
        } else {
            layer(l.coding, reader)
        };
    }
    let mut buf = Vec::with_capacity(cap.min(64 * 1024));
    reader.take(cap as u64 + 1).read_to_end(&mut buf).map_err(|e| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            undecodable(format!(
                "the compressed body is longer than its {}-byte cap",
                max_compressed_input(cap)
            ))
        } else {
            undecodable(format!("the body does not decode: {}", e.kind()))
        }
    })?;
    let truncated = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, truncated))
}

fn layer(c: Coding, inner: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    match c {
        // Concatenated gzip members are one body (as `gzip -c a b` writes); trailing bytes that
        // are not a member fail instead of being dropped silently.
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Coding::Deflate => Box::new(Deflate::new(inner)),
        Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(inner, 8 * 1024)),
        Coding::Zstd => Box::new(Zstd::new(inner)),
    }
}

/// A layer's input with the bytes already looked at put back in front.
type Replayed = io::Chain<Cursor<Vec<u8>>, Box<dyn Read + Send>>;

/// True when `head` (the first bytes of a layer) starts the way `c` always starts: the gzip
/// magic number, a zlib header, a zstd frame or skippable frame. Brotli has no magic number.
fn has_magic(c: Coding, head: &[u8]) -> bool {
    match c {
        Coding::Gzip => head.starts_with(&[0x1f, 0x8b]),
        Coding::Deflate => head.len() >= 2 && is_zlib_header(&head[..2]),
        Coding::Zstd => {
            head.len() == 4 && {
                let m = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
                m == ZSTD_MAGIC || m & 0xFFFF_FFF0 == 0x184D_2A50
            }
        }
        Coding::Brotli => true,
    }
}

/// A layer decoded only if its input starts with the coding's magic number, passed through
/// otherwise (see [`Layer::unless_no_magic`]).
enum IfMagic {
    Pending(Coding, Option<Box<dyn Read + Send>>),
    Ready(Box<dyn Read + Send>),
}

impl Read for IfMagic {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let IfMagic::Pending(c, inner) = self {
            let c = *c;
            let mut inner = inner.take().expect("a pending layer has its input");
            let mut head = Vec::with_capacity(4);
            (&mut inner).take(4).read_to_end(&mut head)?;
            let magic = has_magic(c, &head);
            let src: Box<dyn Read + Send> = Box::new(Cursor::new(head).chain(inner));
            *self = IfMagic::Ready(if magic { layer(c, src) } else { src });
        }
        match self {
            IfMagic::Ready(r) => r.read(out),
            IfMagic::Pending(..) => unreachable!("set just above"),
        }
    }
}

/// `deflate`: zlib (RFC 1950) when the first two bytes form a zlib header, raw deflate otherwise
/// (what several servers send, and what browsers accept too).
enum Deflate {
    Pending(Option<Box<dyn Read + Send>>),
    Zlib(flate2::read::ZlibDecoder<Replayed>),
    Raw(flate2::read::DeflateDecoder<Replayed>),
}

impl Deflate {
    fn new(inner: Box<dyn Read + Send>) -> Self {
        Deflate::Pending(Some(inner))
    }
}

fn is_zlib_header(b: &[u8]) -> bool {
    // CM = 8 (deflate), CINFO <= 7 (window <= 32 KiB), and the check bits make CMF·256 + FLG a
    // multiple of 31.
    b.len() == 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

impl Read for Deflate {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Deflate::Pending(inner) = self {
            let mut inner = inner
                .take()
                .expect("a pending deflate stream has its input");
            let mut head = Vec::with_capacity(2);
            (&mut inner).take(2).read_to_end(&mut head)?;
            let zlib = is_zlib_header(&head);
            let src = Cursor::new(head).chain(inner);
            *self = if zlib {
                Deflate::Zlib(flate2::read::ZlibDecoder::new(src))
            } else {
                Deflate::Raw(flate2::read::DeflateDecoder::new(src))
            };
        }
        match self {
            Deflate::Zlib(d) => d.read(out),
            Deflate::Raw(d) => d.read(out),
            Deflate::Pending(_) => unreachable!("set just above"),
        }
    }
}

/// zstd: every frame of the body in turn (a body may hold several, and skippable frames), each
/// with its window checked against [`ZSTD_MAX_WINDOW`] before the decoder allocates it.
struct Zstd {
    state: ZstdState,
}

enum ZstdState {
    /// Between frames, holding the rest of the body.
    Between(Box<dyn Read + Send>),
    InFrame(Box<ruzstd::decoding::StreamingDecoder<Replayed, ruzstd::decoding::FrameDecoder>>),
    Done,
    /// Only while a transition is in progress.
    Taken,
}

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

fn corrupt(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads as many bytes as `buf` holds, or fewer at a clean end of input; returns how many.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The window a zstd frame header declares (RFC 8878 §3.1.1.1), from the bytes after the magic
/// number; also returns the header bytes read, to hand to the decoder.
fn zstd_window(src: &mut impl Read) -> io::Result<(u64, Vec<u8>)> {
    let mut fhd = [0u8; 1];
    if read_full(src, &mut fhd)? != 1 {
        return Err(corrupt("zstd frame header cut short"));
    }
    let d = fhd[0];
    let single_segment = d & 0x20 != 0;
    let did_len = [0usize, 1, 2, 4][usize::from(d & 0x03)];
    let fcs_len = match d >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let wd_len = usize::from(!single_segment);
    let mut rest = vec![0u8; wd_len + did_len + fcs_len];
    if read_full(src, &mut rest)? != rest.len() {
        return Err(corrupt("zstd frame header cut short"));
    }
    let window = if single_segment {
        // The window is the content size.
        let fcs = &rest[did_len..];
        let mut v = [0u8; 8];
        v[..fcs.len()].copy_from_slice(fcs);
        let size = u64::from_le_bytes(v);
        if fcs_len == 2 {
            size + 256
        } else {
            size
        }
    } else {
        let wd = rest[0];
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        base + (base / 8) * u64::from(wd & 0x07)
    };
    let mut header = Vec::with_capacity(1 + rest.len());
    header.push(d);
    header.extend_from_slice(&rest);
    Ok((window, header))
}

impl Zstd {
    fn new(inner: Box<dyn Read + Send>) -> Self {
        Zstd {
            state: ZstdState::Between(inner),
        }
    }

    /// Starts the next data frame, skipping skippable frames; `Done` at a clean end of input.
    fn next_frame(&mut self, mut src: Box<dyn Read + Send>, first: bool) -> io::Result<()> {
        loop {
            let mut magic = [0u8; 4];
            match read_full(&mut src, &mut magic)? {
                // An empty body is handled before decoding; an empty zstd layer is not a frame.
                0 if !first => {
                    self.state = ZstdState::Done;
                    return Ok(());
                }
                4 => {}
                _ => return Err(corrupt("zstd frame cut short")),
            }
            let m = u32::from_le_bytes(magic);
            if m & 0xFFFF_FFF0 == 0x184D_2A50 {
                let mut len = [0u8; 4];
                if read_full(&mut src, &mut len)? != 4 {
                    return Err(corrupt("zstd skippable frame cut short"));
                }
                let len = u64::from(u32::from_le_bytes(len));
                if io::copy(&mut (&mut src).take(len), &mut io::sink())? != len {
                    return Err(corrupt("zstd skippable frame cut short"));
                }
                continue;
            }
            if m != ZSTD_MAGIC {
                return Err(corrupt("not a zstd frame"));
            }
            let (window, header) = zstd_window(&mut src)?;
            if window > ZSTD_MAX_WINDOW {
                return Err(corrupt("zstd window larger than 8 MiB"));
            }
            let mut replay = magic.to_vec();
            replay.extend_from_slice(&header);
            let dec = ruzstd::decoding::StreamingDecoder::new(Cursor::new(replay).chain(src))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.state = ZstdState::InFrame(Box::new(dec));
            return Ok(());
        }
    }
}

impl Read for Zstd {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match std::mem::replace(&mut self.state, ZstdState::Taken) {
                ZstdState::Between(src) => self.next_frame(src, true)?,
                ZstdState::InFrame(mut dec) => {
                    let n = dec.read(out)?;
                    if n > 0 {
                        self.state = ZstdState::InFrame(dec);
                        return Ok(n);
                    }
                    if !dec.decoder.is_finished() {
                        return Err(corrupt("zstd frame cut short"));
                    }
                    // The decoder reads the frame's checksum but leaves comparing it to us.
                    if let Some(sent) = dec.decoder.get_checksum_from_data() {
                        if dec.decoder.get_calculated_checksum() != Some(sent) {
                            return Err(corrupt("zstd checksum mismatch"));
                        }
                    }
                    let (_, src) = dec.into_inner().into_inner();
                    self.next_frame(src, false)?;
                }
                ZstdState::Done => {
                    self.state = ZstdState::Done;
                    return Ok(0);
                }
                ZstdState::Taken => return Err(corrupt("zstd decoder used after an error")),
            }
        }
    }
}

/// Why the body's chunks stopped before their end.
#[derive(Debug)]
enum Broke {
    /// The transport failed.
    Transport,
    /// The compressed input went past [`max_compressed_input`].
    OverCap,
}

/// The body's chunks as a `Read`, on the blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, Broke>>,
    cur: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Result<Bytes, Broke>>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(Broke::Transport)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the response body broke off",
                    ))
                }
                Some(Err(Broke::OverCap)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::FileTooLarge,
                        "the compressed body is over its cap",
                    ))
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn parse(values: &[&str]) -> Result<Vec<Coding>, ErrorCode> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        codings(&h)
            .map(|l| l.into_iter().map(|l| l.coding).collect())
            .map_err(|e| e.code)
    }

    fn plain(codings: &[Coding]) -> Vec<Layer> {
        codings
            .iter()
            .map(|&coding| Layer {
                coding,
                unless_no_magic: false,
            })
            .collect()
    }

    #[test]
    fn media_types_add_a_layer_after_the_content_codings() {
        let with = |ce: Option<&str>, ct: &str| {
            let mut h = HeaderMap::new();
            if let Some(ce) = ce {
                h.insert(CONTENT_ENCODING, HeaderValue::from_str(ce).unwrap());
            }
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            codings(&h).unwrap()
        };
        assert_eq!(with(None, "application/gzip"), plain(&[Coding::Gzip]));
        assert_eq!(
            with(None, "Application/X-GZIP; charset=binary"),
            plain(&[Coding::Gzip])
        );
        assert_eq!(with(None, "application/zstd"), plain(&[Coding::Zstd]));
        assert_eq!(with(None, "application/zlib"), plain(&[Coding::Deflate]));
        assert_eq!(with(None, "application/x-brotli"), plain(&[Coding::Brotli]));
        assert_eq!(with(None, "application/json"), plain(&[]));
        assert_eq!(with(None, "application/zip"), plain(&[]));
        assert_eq!(
            with(Some("br"), "application/gzip"),
            plain(&[Coding::Brotli, Coding::Gzip])
        );
        // Repeating the content coding right under it: decoded only if it starts like one.
        let l = with(Some("gzip"), "application/gzip");
        assert_eq!(l[1].coding, Coding::Gzip);
        assert!(l[1].unless_no_magic);
        let l = with(Some("br"), "application/x-brotli");
        assert!(!l[1].unless_no_magic, "brotli has no magic number");
    }

    #[test]
    fn a_repeated_layer_is_skipped_only_without_its_magic() {
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, b).unwrap();
            e.finish().unwrap()
        };
        let layers = [
            Layer {
                coding: Coding::Gzip,
                unless_no_magic: false,
            },
            Layer {
                coding: Coding::Gzip,
                unless_no_magic: true,
            },
        ];
        let once = gz(b"hello file");
        let (b, _) = decode_capped(Cursor::new(once.clone()), &layers, 100).unwrap();
        assert_eq!(b, b"hello file");
        let (b, _) = decode_capped(Cursor::new(gz(&once)), &layers, 100).unwrap();
        assert_eq!(b, b"hello file");
        // Starts like gzip but is not: refused, not returned.
        let mut fake = vec![0x1f, 0x8b];
        fake.extend_from_slice(b"not really");
        let e = decode_capped(Cursor::new(gz(&fake)), &layers, 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::UndecodableResponse);
    }

    #[test]
    fn compressed_input_cap_leaves_room_for_incompressible_data() {
        assert_eq!(max_compressed_input(0), 64 * 1024);
        assert_eq!(max_compressed_input(8 << 20), (9 << 20) + 64 * 1024);
        assert_eq!(max_compressed_input(usize::MAX), usize::MAX);
    }

    #[test]
    fn codings_are_undone_in_reverse_order() {
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(parse(&["identity"]), Ok(vec![]));
        assert_eq!(parse(&["GZIP"]), Ok(vec![Coding::Gzip]));
        assert_eq!(parse(&["gzip, br"]), Ok(vec![Coding::Brotli, Coding::Gzip]));
        assert_eq!(
            parse(&["deflate", "zstd"]),
            Ok(vec![Coding::Zstd, Coding::Deflate])
        );
        assert_eq!(parse(&["x-gzip, identity"]), Ok(vec![Coding::Gzip]));
    }

    #[test]
    fn unknown_or_too_many_codings_are_refused() {
        for v in [
            &["compress"][..],
            &["gzip, aes128gcm"],
            &["x-compress"],
            &["gzip, gzip, gzip, gzip"],
            &["gzip", "br", "zstd", "deflate"],
        ] {
            assert_eq!(parse(v), Err(ErrorCode::UndecodableResponse), "{v:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        assert_eq!(
            codings(&h).unwrap_err().code,
            ErrorCode::UndecodableResponse
        );
    }

    #[test]
    fn zlib_header_detection() {
        assert!(is_zlib_header(&[0x78, 0x9c]));
        assert!(is_zlib_header(&[0x78, 0x01]));
        assert!(is_zlib_header(&[0x78, 0xda]));
        assert!(!is_zlib_header(&[0x78, 0x9d]));
        assert!(!is_zlib_header(&[0xcb, 0x48]));
        assert!(!is_zlib_header(&[0x78]));
    }

    /// One zstd frame holding "abc" in a raw block, declaring window descriptor `wd`.
    fn zstd_frame(wd: u8) -> Vec<u8> {
        let mut f = ZSTD_MAGIC.to_le_bytes().to_vec();
        f.extend_from_slice(&[0x00, wd]); // no checksum, no content size, not single segment
        f.extend_from_slice(&[0x19, 0x00, 0x00]); // last block, raw, 3 bytes
        f.extend_from_slice(b"abc");
        f
    }

    #[test]
    fn zstd_windows_over_8_mib_are_refused_before_decoding() {
        // 1 MiB (exponent 10) decodes; 8 MiB is the limit; 16 MiB is refused.
        let ok = decode_capped(Cursor::new(zstd_frame(0x50)), &plain(&[Coding::Zstd]), 100).unwrap();
        assert_eq!(ok, (b"abc".to_vec(), false));
        assert!(decode_capped(Cursor::new(zstd_frame(0x68)), &plain(&[Coding::Zstd]), 100).is_ok());
        let e = decode_capped(Cursor::new(zstd_frame(0x70)), &plain(&[Coding::Zstd]), 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::UndecodableResponse);
    }

    #[test]
    fn zstd_checksum_is_verified() {
        let mut f = ZSTD_MAGIC.to_le_bytes().to_vec();
        f.extend_from_slice(&[0x04, 0x50]); // content checksum on, 1 MiB window
        f.extend_from_slice(&[0x19, 0x00, 0x00]);
        f.extend_from_slice(b"abc");
        // XXH64("abc", seed 0), low 32 bits, little-endian.
        let good = 0xAD77_0999_u32.to_le_bytes();
        let mut ok = f.clone();
        ok.extend_from_slice(&good);
        assert_eq!(
            decode_capped(Cursor::new(ok), &plain(&[Coding::Zstd]), 100)
                .unwrap()
                .0,
            b"abc"
        );
        let mut bad = f;
        bad.extend_from_slice(&[0, 0, 0, 0]);
        let e = decode_capped(Cursor::new(bad), &plain(&[Coding::Zstd]), 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::UndecodableResponse);
    }

    #[test]
    fn decoding_stops_one_byte_past_the_cap() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut e, &[b'x'; 10]).unwrap();
        let gz = e.finish().unwrap();
        for (cap, truncated) in [(9, true), (10, false), (11, false), (0, true)] {
            let (b, t) = decode_capped(Cursor::new(gz.clone()), &plain(&[Coding::Gzip]), cap).unwrap();
            assert_eq!((b.len(), t), (cap.min(10), truncated), "{cap}");
        }
    }

    #[test]
    fn zstd_window_is_read_from_the_header() {
        // Window descriptor 0x58: exponent 11, mantissa 0 → 2 MiB.
        let (w, h) = zstd_window(&mut &[0x00u8, 0x58][..]).unwrap();
        assert_eq!((w, h.len()), (2 * 1024 * 1024, 2));
        // Single segment, 2-byte content size 0x0100 + 256.
        let (w, _) = zstd_window(&mut &[0x60u8, 0x00, 0x01][..]).unwrap();
        assert_eq!(w, 512);
        // Single segment with an 8-byte content size of 1 GiB.
        let mut b = vec![0xE0u8];
        b.extend_from_slice(&(1u64 << 30).to_le_bytes());
        assert_eq!(zstd_window(&mut &b[..]).unwrap().0, 1 << 30);
    }
}
