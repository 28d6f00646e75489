//! An HTTP/2 front for gRPC servers on Unix sockets that sets every request's `:authority` to
//! `localhost` before tonic sees it.
//!
//! Why: kubelet's plugin watcher and DRA client (1.34-1.36) dial a socket path with grpc-go's
//! default resolver, which sends the path percent-encoded as `:authority`
//! (`%2Fvar%2Flib%2Fkubelet%2F...`); older clients and grpcio send the raw path. tonic's HTTP/2
//! layer (h2, through the `http` crate) refuses both with PROTOCOL_ERROR, and will not relax
//! it. The authority means nothing on a Unix socket, so this front rewrites it.
//!
//! How: client-to-server bytes pass frame by frame; a request's header block (HEADERS plus
//! CONTINUATION) is decoded with HPACK (RFC 7541) and encoded again with every field a literal
//! that is never added to the dynamic table, so the server's decoder table stays empty and the
//! client's keeps following the client's own encoder. Everything else (DATA, SETTINGS, PING,
//! WINDOW_UPDATE, and all server-to-client bytes) passes unchanged. Input is bounded: a header
//! block over 64 KiB, a frame over 1 MiB or an HPACK error ends the connection (h2 would end it
//! for a compression error too).

use std::collections::VecDeque;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE: frames this front writes never exceed it.
const OUT_FRAME: usize = 16_384;
const MAX_FRAME: usize = 1 << 20;
const MAX_BLOCK: usize = 64 << 10;
/// HPACK dynamic table ceiling a client may ask for (the server advertises the 4096 default).
const MAX_TABLE: usize = 64 << 10;
pub const AUTHORITY: &[u8] = b"localhost";

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

// ------------------------------------------------------------------ Huffman (RFC 7541 App. B)

/// Code length in bits of each symbol 0..=256 (256 is end-of-string), one base-36 digit each.
/// The code is canonical: codes of each length are consecutive, in symbol order, after those
/// of all shorter lengths, so the lengths determine it.
const HUFFMAN_LENGTHS: &[u8; 257] = b"dnsssssssoussussssssssusssssssss6aacd68baa8b8666555666666678f6cad67777777777777777777777878djde6f56565666577666567655677777fbedskmkkmmmnmnnnnnonoomnonnnnlmnmnnomlkmmnnlnmmolmnnllmlnmnnkmmmnmmnqqkjmnmpqqqrrqopjlqrrqrollqqsrrrkoklmllnmmppooqnqrqqrrrrrsrrrrrqu";

struct Huffman {
    /// Symbols ordered by (length, symbol).
    symbols: Vec<u16>,
    /// Per length: first code, index of its first symbol, number of codes.
    first: [u32; 31],
    offset: [usize; 31],
    count: [u32; 31],
}

fn huffman() -> &'static Huffman {
    static TABLE: std::sync::OnceLock<Huffman> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let len = |s: usize| {
            let c = HUFFMAN_LENGTHS[s];
            (if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'a' + 10
            }) as usize
        };
        let mut symbols: Vec<u16> = (0..257).collect();
        symbols.sort_by_key(|&s| (len(s as usize), s));
        let mut h = Huffman {
            symbols,
            first: [0; 31],
            offset: [0; 31],
            count: [0; 31],
        };
        let mut code = 0u32;
        let mut i = 0;
        for l in 1..=30 {
            h.first[l] = code;
            h.offset[l] = i;
            while i < 257 && len(h.symbols[i] as usize) == l {
                h.count[l] += 1;
                code += 1;
                i += 1;
            }
            code <<= 1;
        }
        h
    })
}

fn huffman_decode(input: &[u8]) -> io::Result<Vec<u8>> {
    let h = huffman();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > 30 {
                return Err(bad("bad Huffman code"));
            }
            let k = code.wrapping_sub(h.first[len]);
            if code >= h.first[len] && k < h.count[len] {
                let s = h.symbols[h.offset[len] + k as usize];
                if s == 256 {
                    return Err(bad("end-of-string symbol in a Huffman string"));
                }
                out.push(s as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: at most 7 bits, all ones (a prefix of end-of-string).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(bad("bad Huffman padding"));
    }
    Ok(out)
}

// ------------------------------------------------------------------ HPACK

const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// One decoded header field; `never` keeps the client's "never indexed" marking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub never: bool,
}

/// The decoding side of one connection's HPACK context (client to server).
#[derive(Debug)]
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
        }
    }
}

fn integer(buf: &[u8], pos: &mut usize, prefix: u8) -> io::Result<usize> {
    let mask = (1u16 << prefix) as u8 - 1;
    let first = *buf.get(*pos).ok_or_else(|| bad("truncated integer"))? & mask;
    *pos += 1;
    if first < mask {
        return Ok(first as usize);
    }
    let mut value = mask as usize;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated integer"))?;
        *pos += 1;
        value += ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 21 {
            return Err(bad("integer too large"));
        }
    }
}

fn string(buf: &[u8], pos: &mut usize) -> io::Result<Vec<u8>> {
    let huff = buf.get(*pos).ok_or_else(|| bad("truncated string"))? & 0x80 != 0;
    let len = integer(buf, pos, 7)?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| bad("truncated string"))?;
    let raw = &buf[*pos..end];
    *pos = end;
    if huff {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

impl Decoder {
    fn entry(&self, index: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
        match index {
            0 => Err(bad("index 0")),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or_else(|| bad("index beyond the dynamic table")),
        }
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let (n, v) = self.table.pop_back().expect("size > 0 means entries");
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        self.size += size;
        self.table.push_front((name, value));
        // An entry bigger than the table empties it (RFC 7541 4.4).
        self.evict();
    }

    /// Decode one complete header block.
    pub fn decode(&mut self, buf: &[u8]) -> io::Result<Vec<Field>> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let b = buf[pos];
            if b & 0x80 != 0 {
                let (name, value) = self.entry(integer(buf, &mut pos, 7)?)?;
                out.push(Field {
                    name,
                    value,
                    never: false,
                });
            } else if b & 0xc0 == 0x40 {
                let index = integer(buf, &mut pos, 6)?;
                let name = match index {
                    0 => string(buf, &mut pos)?,
                    i => self.entry(i)?.0,
                };
                let value = string(buf, &mut pos)?;
                self.insert(name.clone(), value.clone());
                out.push(Field {
                    name,
                    value,
                    never: false,
                });
            } else if b & 0xe0 == 0x20 {
                let max = integer(buf, &mut pos, 5)?;
                if max > MAX_TABLE {
                    return Err(bad("dynamic table size over the limit"));
                }
                self.max = max;
                self.evict();
            } else {
                let never = b & 0xf0 == 0x10;
                let index = integer(buf, &mut pos, 4)?;
                let name = match index {
                    0 => string(buf, &mut pos)?,
                    i => self.entry(i)?.0,
                };
                let value = string(buf, &mut pos)?;
                out.push(Field { name, value, never });
            }
        }
        Ok(out)
    }
}

fn put_integer(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
    let mask = ((1u16 << prefix) - 1) as usize;
    if value < mask {
        out.push(first | value as u8);
        return;
    }
    out.push(first | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encode fields as literals with literal names that touch no dynamic table.
pub fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.push(if f.never { 0x10 } else { 0x00 });
        put_integer(&mut out, 0, 7, f.name.len());
        out.extend_from_slice(&f.name);
        put_integer(&mut out, 0, 7, f.value.len());
        out.extend_from_slice(&f.value);
    }
    out
}

/// A header block with `:authority` set to [`AUTHORITY`].
pub fn rewrite(decoder: &mut Decoder, block: &[u8]) -> io::Result<Vec<u8>> {
    let mut fields = decoder.decode(block)?;
    for f in &mut fields {
        if f.name == b":authority" {
            f.value = AUTHORITY.to_vec();
        }
    }
    Ok(encode(&fields))
}

// ------------------------------------------------------------------ frames

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

/// Copy client-to-server HTTP/2 bytes, rewriting request header blocks.
pub async fn forward<R, W>(mut from: R, mut to: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: let the server refuse it.
        tokio::io::copy(&mut from, &mut to).await?;
        return Ok(());
    }
    let mut decoder = Decoder::default();
    // A header block being collected: stream, flags of its HEADERS frame, priority bytes.
    let mut pending: Option<(u32, u8, Vec<u8>, Vec<u8>)> = None;
    loop {
        let mut h = [0u8; 9];
        match from.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return to.shutdown().await,
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME {
            return Err(bad("frame too large"));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        let block_done = match (kind, pending.as_mut()) {
            (HEADERS, None) => {
                let mut p = &payload[..];
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *p.first().ok_or_else(|| bad("short HEADERS"))? as usize;
                    p = &p[1..];
                }
                let mut priority = Vec::new();
                if flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(bad("short HEADERS"));
                    }
                    priority = p[..5].to_vec();
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(bad("HEADERS padding exceeds the frame"));
                }
                let fragment = p[..p.len() - pad].to_vec();
                pending = Some((stream, flags, priority, fragment));
                flags & END_HEADERS != 0
            }
            (CONTINUATION, Some((s, _, _, block))) if *s == stream => {
                block.extend_from_slice(&payload);
                flags & END_HEADERS != 0
            }
            (_, Some(_)) => return Err(bad("frame inside a header block")),
            _ => {
                to.write_all(&h).await?;
                to.write_all(&payload).await?;
                to.flush().await?;
                continue;
            }
        };
        if pending.as_ref().is_some_and(|p| p.3.len() > MAX_BLOCK) {
            return Err(bad("header block too large"));
        }
        if !block_done {
            continue;
        }
        let (stream, flags, priority, block) = pending.take().expect("set above");
        let block = rewrite(&mut decoder, &block)?;
        let mut first = priority.clone();
        let room = OUT_FRAME - first.len();
        let cut = block.len().min(room);
        first.extend_from_slice(&block[..cut]);
        let mut rest = &block[cut..];
        let first_flags =
            (flags & (END_STREAM | PRIORITY)) | if rest.is_empty() { END_HEADERS } else { 0 };
        to.write_all(&frame_header(first.len(), HEADERS, first_flags, stream))
            .await?;
        to.write_all(&first).await?;
        while !rest.is_empty() {
            let n = rest.len().min(OUT_FRAME);
            let last = n == rest.len();
            let f = if last { END_HEADERS } else { 0 };
            to.write_all(&frame_header(n, CONTINUATION, f, stream))
                .await?;
            to.write_all(&rest[..n]).await?;
            rest = &rest[n..];
        }
        to.flush().await?;
    }
}

/// Serve one accepted connection through the front: returns the server's end of it.
pub fn front<S>(client: S) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (server_end, ours) = tokio::io::duplex(64 << 10);
    let (client_read, mut client_write) = tokio::io::split(client);
    let (mut ours_read, ours_write) = tokio::io::split(ours);
    tokio::spawn(async move {
        let up = forward(client_read, ours_write);
        let down = async {
            let r = tokio::io::copy(&mut ours_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
            r
        };
        tokio::pin!(down);
        tokio::select! {
            r = up => match r {
                // The client is done sending: let the server's answers reach it.
                Ok(()) => { let _ = (&mut down).await; }
                Err(e) => tracing::debug!("HTTP/2 front: closing a connection: {e}"),
            },
            // The server closed: nothing more can be answered.
            _ = &mut down => {}
        }
    });
    server_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_decodes_the_rfc_examples() {
        // RFC 7541 C.4.1 "www.example.com", C.6.1 "302".
        let coded = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(huffman_decode(&coded).unwrap(), b"www.example.com");
        assert_eq!(huffman_decode(&[0x64, 0x02]).unwrap(), b"302");
        assert!(huffman_decode(&[0x00]).is_err());
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn decodes_rfc_request_sequence_with_huffman() {
        // RFC 7541 C.4: three requests sharing one dynamic table.
        let mut d = Decoder::default();
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let one = d
            .decode(&hex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
            .unwrap();
        assert_eq!(one[3].name, b":authority");
        assert_eq!(one[3].value, b"www.example.com");
        let two = d.decode(&hex("828684be5886a8eb10649cbf")).unwrap();
        assert_eq!(two[3].value, b"www.example.com");
        assert_eq!(two[4].name, b"cache-control");
        assert_eq!(two[4].value, b"no-cache");
        let three = d
            .decode(&hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
            .unwrap();
        assert_eq!(three[3].value, b"www.example.com");
        assert_eq!(three[4].name, b"custom-key");
        assert_eq!(three[4].value, b"custom-value");
        assert_eq!(d.size, 164);
    }

    #[test]
    fn rewrite_sets_localhost_and_round_trips() {
        let mut d = Decoder::default();
        let fields = vec![
            Field {
                name: b":authority".to_vec(),
                value: b"%2Fvar%2Flib%2Fkubelet%2Fx.sock".to_vec(),
                never: false,
            },
            Field {
                name: b"x-long".to_vec(),
                value: vec![b'a'; 300],
                never: true,
            },
        ];
        let out = rewrite(&mut d, &encode(&fields)).unwrap();
        let back = Decoder::default().decode(&out).unwrap();
        assert_eq!(back[0].value, AUTHORITY);
        assert_eq!(back[1], fields[1]);
    }
}
