//! The cases of the conformance suite, by the part of the RFCs they test.

use super::super::h2_raw::*;
use super::{case, steps, Case, Step, Want};

/// A literal field without indexing, with a new name.
fn lit(name: &str, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value);
    b
}

/// The same with a Huffman-coded value of the given bytes.
fn huffman(name: &str, coded: &[u8]) -> Vec<u8> {
    let mut b = vec![0, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(0x80 | coded.len() as u8);
    b.extend_from_slice(coded);
    b
}

/// A request head from its fields in order, pseudo-headers included (`:method GET` and
/// `:scheme http` are the static table's 2 and 6).
fn head(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(n, v)| lit(n, v.as_bytes()))
        .collect()
}

fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags, stream, block)
}

/// A complete GET of `/` on `stream`.
fn request(stream: u32) -> Vec<u8> {
    headers(stream, END_STREAM | END_HEADERS, &get("/", &[]))
}

/// A POST to `/hang` on stream 1, its body still open: the upstream never answers, so the
/// stream stays open as long as the case needs.
fn open_stream() -> Vec<u8> {
    headers(1, END_HEADERS, &block(0x83, "/hang", &[]))
}

/// The same with the request complete: the stream is half-closed (remote).
fn half_closed() -> Vec<u8> {
    headers(1, END_STREAM | END_HEADERS, &block(0x83, "/hang", &[]))
}

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let p: Vec<u8> = pairs
        .iter()
        .flat_map(|(k, v)| [&k.to_be_bytes()[..], &v.to_be_bytes()[..]].concat())
        .collect();
    frame(SETTINGS, 0, 0, &p)
}

fn window(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A request with `extra` fields after the usual pseudo-headers, for the field rules.
fn with(extra: &[(&str, &str)]) -> Vec<u8> {
    headers(1, END_STREAM | END_HEADERS, &get("/", extra))
}

/// A request whose head is exactly `fields` (literals), for the pseudo-header rules.
fn exactly(fields: &[(&str, &str)]) -> Vec<u8> {
    headers(1, END_STREAM | END_HEADERS, &head(fields))
}

const PROTOCOL: &[u32] = &[0x1];
const FLOW_CONTROL: &[u32] = &[0x3];
const STREAM_CLOSED: &[u32] = &[0x5];
const FRAME_SIZE: &[u32] = &[0x6];
const COMPRESSION: &[u32] = &[0x9];

pub fn framing_cases() -> Vec<Case> {
    use Want::*;
    let get1 = get("/", &[]);
    vec![
        Case {
            rule: "3.4 an invalid connection preface",
            steps: vec![Step::Send(
                [&b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..], &settings(&[])].concat(),
            )],
            want: Closed,
            handshake: false,
        },
        case(
            "4.1 a frame of unknown type is ignored",
            frame(0x16, 0, 0, b"12345678"),
            Fine,
        ),
        case(
            "4.1 undefined flags are ignored",
            frame(PING, 0x16, 0, b"12345678"),
            Fine,
        ),
        case(
            "4.1 the reserved bit of a stream id is ignored",
            headers(0x8000_0001, END_STREAM | END_HEADERS, &get1),
            Answer(1),
        ),
        case(
            "4.2 a DATA frame of 16,384 octets",
            [open_stream(), frame(DATA, 0, 1, &[b'x'; 16_384])].concat(),
            Fine,
        ),
        case(
            "4.2 a DATA frame past SETTINGS_MAX_FRAME_SIZE",
            [open_stream(), frame(DATA, 0, 1, &[b'x'; 16_385])].concat(),
            Reset(1, FRAME_SIZE),
        ),
        case(
            "4.2 a HEADERS frame past SETTINGS_MAX_FRAME_SIZE",
            headers(
                1,
                END_STREAM | END_HEADERS,
                &[&get1[..], &[0x82; 16_385][..]].concat(),
            ),
            GoAway(FRAME_SIZE),
        ),
        case(
            "4.2 a PING frame past SETTINGS_MAX_FRAME_SIZE",
            frame(PING, 0, 0, &[0; 20_000]),
            GoAway(FRAME_SIZE),
        ),
        case(
            "4.3 a header block that does not decode",
            headers(1, END_STREAM | END_HEADERS, &[0x82, 0x04, 0x7f, 0x00]),
            GoAway(COMPRESSION),
        ),
        case(
            "4.3 a PRIORITY frame inside a header block",
            [
                headers(1, END_STREAM, &get1[..2]),
                frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
                frame(CONTINUATION, END_HEADERS, 1, &get1[2..]),
            ]
            .concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "5.5 an unknown frame inside a header block",
            [
                headers(1, END_STREAM, &get1[..2]),
                frame(0x16, 0, 1, b"12345678"),
                frame(CONTINUATION, END_HEADERS, 1, &get1[2..]),
            ]
            .concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "6.1 DATA on stream 0",
            frame(DATA, 0, 0, b"x"),
            GoAway(PROTOCOL),
        ),
        case(
            "6.1 DATA whose padding is longer than the frame",
            [open_stream(), frame(DATA, PADDED, 1, &[10, b'x', b'y'])].concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "6.1 DATA with padding",
            [
                open_stream(),
                frame(DATA, PADDED, 1, &[3, b'a', b'b', 0, 0, 0]),
            ]
            .concat(),
            Fine,
        ),
        case(
            "6.2 HEADERS with padding and a priority",
            headers(
                1,
                END_STREAM | END_HEADERS | PADDED | PRIORITIZED,
                &[&[2, 0, 0, 0, 0, 16][..], &get1, &[0, 0]].concat(),
            ),
            Answer(1),
        ),
        case(
            "6.2 HEADERS followed by a frame other than CONTINUATION",
            [headers(1, END_STREAM, &get1), frame(DATA, 0, 1, b"x")].concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "6.2 HEADERS on stream 0",
            headers(0, END_STREAM | END_HEADERS, &get1),
            GoAway(PROTOCOL),
        ),
        case(
            "6.2 HEADERS whose padding is longer than the frame",
            headers(1, END_STREAM | END_HEADERS | PADDED, &[200, 0x82]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.3 PRIORITY on stream 0",
            frame(PRIORITY, 0, 0, &[0, 0, 0, 1, 16]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.3 PRIORITY of 4 octets",
            frame(PRIORITY, 0, 1, &[0, 0, 0, 3]),
            Reset(1, FRAME_SIZE),
        ),
        case(
            "6.3 PRIORITY on an idle stream, which then opens",
            [frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 16]), request(3)].concat(),
            Answer(3),
        ),
        case(
            "5.3.1 PRIORITY making a stream depend on itself",
            frame(PRIORITY, 0, 1, &[0, 0, 0, 1, 16]),
            Reset(1, PROTOCOL),
        ),
        case(
            "5.3.1 HEADERS making a stream depend on itself",
            headers(
                1,
                END_STREAM | END_HEADERS | PRIORITIZED,
                &[&[0, 0, 0, 1, 16][..], &get1].concat(),
            ),
            Reset(1, PROTOCOL),
        ),
        case("6.4 RST_STREAM on stream 0", rst(0, 8), GoAway(PROTOCOL)),
        case(
            "6.4 RST_STREAM of 3 octets",
            [open_stream(), frame(RST_STREAM, 0, 1, &[0, 0, 8])].concat(),
            GoAway(FRAME_SIZE),
        ),
        case(
            "6.5 SETTINGS ACK with a payload",
            frame(SETTINGS, 1, 0, &[0, 4, 0, 0, 0, 1]),
            GoAway(FRAME_SIZE),
        ),
        case(
            "6.5 SETTINGS on a stream",
            frame(SETTINGS, 0, 1, &[]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.5 SETTINGS of 3 octets",
            frame(SETTINGS, 0, 0, &[0, 4, 0]),
            GoAway(FRAME_SIZE),
        ),
        case(
            "6.5.2 SETTINGS_ENABLE_PUSH of 2",
            settings(&[(0x2, 2)]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.5.2 SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1",
            settings(&[(0x4, 1 << 31)]),
            GoAway(FLOW_CONTROL),
        ),
        case(
            "6.5.2 SETTINGS_MAX_FRAME_SIZE below 16,384",
            settings(&[(0x5, 16_383)]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.5.2 SETTINGS_MAX_FRAME_SIZE past 2^24-1",
            settings(&[(0x5, 1 << 24)]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.5.2 an unknown setting is ignored",
            settings(&[(0xff, 1)]),
            Fine,
        ),
        case(
            "6.5.3 SETTINGS is acknowledged",
            settings(&[(0x3, 100)]),
            // The handshake's SETTINGS and this one.
            Acks(SETTINGS, 2),
        ),
        case(
            "6.7 PING is answered with its payload",
            frame(PING, 0, 0, b"12345678"),
            Acks(PING, 1),
        ),
        case(
            "6.7 a PING ACK is not answered",
            frame(PING, 1, 0, b"ackackak"),
            Fine,
        ),
        case(
            "6.7 PING on a stream",
            frame(PING, 0, 1, b"12345678"),
            GoAway(PROTOCOL),
        ),
        case(
            "6.7 PING of 6 octets",
            frame(PING, 0, 0, b"123456"),
            GoAway(FRAME_SIZE),
        ),
        case(
            "6.8 GOAWAY on a stream",
            frame(GOAWAY, 0, 1, &[0, 0, 0, 0, 0, 0, 0, 0]),
            GoAway(PROTOCOL),
        ),
        case(
            "6.9 WINDOW_UPDATE of 0 on the connection",
            window(0, 0),
            GoAway(PROTOCOL),
        ),
        case(
            "6.9 WINDOW_UPDATE of 0 on a stream",
            [open_stream(), window(1, 0)].concat(),
            Reset(1, PROTOCOL),
        ),
        case(
            "6.9 WINDOW_UPDATE of 3 octets",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
            GoAway(FRAME_SIZE),
        ),
        case(
            "6.9.1 a connection window past 2^31-1",
            [window(0, 0x7fff_ffff)].concat(),
            GoAway(FLOW_CONTROL),
        ),
        case(
            "6.9.1 a stream window past 2^31-1",
            [open_stream(), window(1, 0x7fff_ffff)].concat(),
            Reset(1, FLOW_CONTROL),
        ),
        case(
            "6.9.2 SETTINGS_INITIAL_WINDOW_SIZE taking a stream window past 2^31-1",
            [
                open_stream(),
                window(1, 0x7fff_ffff - 65_535),
                settings(&[(0x4, 0x7fff_ffff)]),
            ]
            .concat(),
            GoAway(FLOW_CONTROL),
        ),
        case(
            "6.10 a header block in several CONTINUATION frames",
            [
                headers(1, END_STREAM, &get1[..1]),
                frame(CONTINUATION, 0, 1, &get1[1..3]),
                frame(CONTINUATION, END_HEADERS, 1, &get1[3..]),
            ]
            .concat(),
            Answer(1),
        ),
        case(
            "6.10 a header block cut by a PING",
            [headers(1, 0, &get1[..1]), frame(PING, 0, 0, b"12345678")].concat(),
            GoAway(PROTOCOL),
        ),
        case(
            // A server's limit (CVE-2024-27316): ENHANCE_YOUR_CALM past 64 CONTINUATIONs.
            "6.10 a flood of CONTINUATION frames",
            [
                headers(1, 0, &get1[..1]),
                (0..65)
                    .flat_map(|_| frame(CONTINUATION, 0, 1, &[0x82]))
                    .collect(),
            ]
            .concat(),
            GoAway(&[0xb]),
        ),
        case(
            "6.10 CONTINUATION after the block ended",
            [
                request(1),
                frame(CONTINUATION, END_HEADERS, 1, &lit("x-a", b"1")),
            ]
            .concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "6.10 CONTINUATION on stream 0",
            [
                headers(1, END_STREAM, &get1),
                frame(CONTINUATION, END_HEADERS, 0, &lit("x-a", b"1")),
            ]
            .concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "6.10 CONTINUATION on another stream",
            [
                headers(1, END_STREAM, &get1),
                frame(CONTINUATION, END_HEADERS, 3, &lit("x-a", b"1")),
            ]
            .concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "8.4 PUSH_PROMISE from a client",
            frame(
                PUSH_PROMISE,
                END_HEADERS,
                1,
                &[&[0, 0, 0, 2][..], &get1].concat(),
            ),
            GoAway(PROTOCOL),
        ),
    ]
}

pub fn stream_cases() -> Vec<Case> {
    use Want::*;
    let trailer = lit("x-trailer", b"1");
    vec![
        case(
            "5.1 DATA on an idle stream",
            frame(DATA, END_STREAM, 1, b"x"),
            GoAway(PROTOCOL),
        ),
        case(
            "5.1 RST_STREAM on an idle stream",
            rst(1, 8),
            GoAway(PROTOCOL),
        ),
        case(
            "5.1 WINDOW_UPDATE on an idle stream",
            window(1, 1),
            GoAway(PROTOCOL),
        ),
        case(
            "5.1 CONTINUATION on an idle stream",
            frame(CONTINUATION, END_HEADERS, 1, &get("/", &[])),
            GoAway(PROTOCOL),
        ),
        case(
            "5.1 half-closed (remote): DATA",
            [half_closed(), frame(DATA, 0, 1, b"x")].concat(),
            Reset(1, STREAM_CLOSED),
        ),
        case(
            "5.1 half-closed (remote): HEADERS",
            [
                half_closed(),
                headers(1, END_STREAM | END_HEADERS, &trailer),
            ]
            .concat(),
            Reset(1, STREAM_CLOSED),
        ),
        case(
            "5.1 half-closed (remote): CONTINUATION",
            [half_closed(), frame(CONTINUATION, END_HEADERS, 1, &trailer)].concat(),
            GoAway(&[0x1, 0x5]),
        ),
        case(
            "5.1 closed by the client's RST_STREAM: DATA",
            [open_stream(), rst(1, 8), frame(DATA, 0, 1, b"x")].concat(),
            Reset(1, STREAM_CLOSED),
        ),
        case(
            "5.1 closed by the client's RST_STREAM: HEADERS",
            [
                open_stream(),
                rst(1, 8),
                headers(1, END_STREAM | END_HEADERS, &trailer),
            ]
            .concat(),
            Reset(1, STREAM_CLOSED),
        ),
        case(
            "5.1 closed by the client's RST_STREAM: CONTINUATION",
            [
                open_stream(),
                rst(1, 8),
                frame(CONTINUATION, END_HEADERS, 1, &trailer),
            ]
            .concat(),
            GoAway(&[0x1, 0x5]),
        ),
        case(
            "5.1 closed by the client's RST_STREAM: WINDOW_UPDATE and PRIORITY are allowed",
            [
                open_stream(),
                rst(1, 8),
                window(1, 1),
                frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
            ]
            .concat(),
            Fine,
        ),
        steps(
            "5.1 closed at both ends: DATA",
            vec![
                Step::Send(request(1)),
                Step::AwaitEnd(1),
                Step::Send(frame(DATA, 0, 1, b"x")),
            ],
            Reset(1, STREAM_CLOSED),
        ),
        steps(
            "5.1 closed at both ends: HEADERS",
            vec![
                Step::Send(request(1)),
                Step::AwaitEnd(1),
                Step::Send(request(1)),
            ],
            Reset(1, STREAM_CLOSED),
        ),
        steps(
            "5.1 closed at both ends: WINDOW_UPDATE and RST_STREAM are allowed",
            vec![
                Step::Send(request(1)),
                Step::AwaitEnd(1),
                Step::Send([window(1, 1), rst(1, 8)].concat()),
            ],
            Fine,
        ),
        // The answer needs no body: the server ends the stream with RST_STREAM NO_ERROR
        // (8.1), and what the client had sent by then must not end the connection.
        steps(
            "5.1 DATA and trailers crossing the server's RST_STREAM are ignored",
            vec![
                Step::Send(headers(1, END_HEADERS, &block(0x83, "/", &[]))),
                Step::AwaitEnd(1),
                Step::Send(
                    [
                        frame(DATA, 0, 1, b"abc"),
                        headers(1, END_STREAM | END_HEADERS, &trailer),
                        request(3),
                    ]
                    .concat(),
                ),
            ],
            Answer(3),
        ),
        case(
            "5.1.1 an even stream id",
            headers(2, END_STREAM | END_HEADERS, &get("/", &[])),
            GoAway(PROTOCOL),
        ),
        case(
            "5.1.1 a stream id below one used before",
            [request(5), request(3)].concat(),
            GoAway(PROTOCOL),
        ),
        case(
            "8.1 trailers end a request",
            [
                headers(1, END_HEADERS, &block(0x83, "/", &[])),
                frame(DATA, 0, 1, b"abc"),
                headers(1, END_STREAM | END_HEADERS, &trailer),
            ]
            .concat(),
            Answer(1),
        ),
        case(
            "8.1 trailers without END_STREAM",
            [
                open_stream(),
                frame(DATA, 0, 1, b"abc"),
                headers(1, END_HEADERS, &trailer),
            ]
            .concat(),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.1 a pseudo-header in trailers",
            [
                open_stream(),
                headers(1, END_STREAM | END_HEADERS, &lit(":path", b"/")),
            ]
            .concat(),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.1 an uppercase field name in trailers",
            [
                open_stream(),
                headers(1, END_STREAM | END_HEADERS, &lit("X-Trailer", b"1")),
            ]
            .concat(),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.1.1 a body shorter than content-length",
            [
                headers(
                    1,
                    END_HEADERS,
                    &block(0x83, "/hang", &[("content-length", "10")]),
                ),
                frame(DATA, END_STREAM, 1, b"abc"),
            ]
            .concat(),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.1.1 a body longer than content-length",
            [
                headers(
                    1,
                    END_HEADERS,
                    &block(0x83, "/hang", &[("content-length", "2")]),
                ),
                frame(DATA, END_STREAM, 1, b"abc"),
            ]
            .concat(),
            Reset(1, PROTOCOL),
        ),
    ]
}

pub fn field_cases() -> Vec<Case> {
    use Want::*;
    let m = (":method", "GET");
    let s = (":scheme", "http");
    let p = (":path", "/");
    let a = (":authority", "h2.test");
    vec![
        case(
            "8.2 an uppercase field name",
            with(&[("X-Upper", "1")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field name with a space",
            with(&[("x a", "1")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field name with a colon",
            with(&[("x:a", "1")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field value with a NUL",
            with(&[("x-a", "a\0b")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field value with a CR",
            with(&[("x-a", "a\rb")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field value with a LF",
            with(&[("x-a", "a\nb")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field value starting with a space",
            with(&[("x-a", " b")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.1 a field value ending with a tab",
            with(&[("x-a", "b\t")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 connection",
            with(&[("connection", "close")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 keep-alive",
            with(&[("keep-alive", "1")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 proxy-connection",
            with(&[("proxy-connection", "x")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 upgrade",
            with(&[("upgrade", "websocket")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 te other than trailers",
            with(&[("te", "gzip")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.2.2 te: trailers is allowed",
            with(&[("te", "trailers")]),
            Answer(1),
        ),
        case(
            "8.3 the request pseudo-headers",
            exactly(&[m, s, p, a]),
            Answer(1),
        ),
        case(
            "8.3 an unknown pseudo-header",
            exactly(&[m, s, p, a, (":foo", "x")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3 a response pseudo-header in a request",
            exactly(&[m, s, p, a, (":status", "200")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3 a pseudo-header after a regular field",
            exactly(&[m, s, ("x-a", "1"), p, a]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3 :path twice",
            exactly(&[m, s, p, p, a]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3 :method twice",
            exactly(&[m, m, s, p, a]),
            Reset(1, PROTOCOL),
        ),
        case("8.3.1 no :method", exactly(&[s, p, a]), Reset(1, PROTOCOL)),
        case("8.3.1 no :scheme", exactly(&[m, p, a]), Reset(1, PROTOCOL)),
        case("8.3.1 no :path", exactly(&[m, s, a]), Reset(1, PROTOCOL)),
        case(
            "8.3.1 an empty :path",
            exactly(&[m, s, (":path", ""), a]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3.1 a :path that is not a path",
            exactly(&[m, s, (":path", "a"), a]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3.1 :authority with a userinfo",
            exactly(&[m, s, p, (":authority", "u@h2.test")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3.1 a host naming another entity than :authority",
            exactly(&[m, s, p, a, ("host", "other.test")]),
            Reset(1, PROTOCOL),
        ),
        case(
            "8.3.1 a host naming the same one",
            exactly(&[m, s, p, a, ("host", "H2.test")]),
            Answer(1),
        ),
        case(
            "8.3.1 OPTIONS * (well formed; no upstream URL says it: 400, as on HTTP/1.1)",
            exactly(&[(":method", "OPTIONS"), s, (":path", "*"), a]),
            Status(1, "400"),
        ),
    ]
}

pub fn hpack_cases() -> Vec<Case> {
    use Want::*;
    let get1 = get("/", &[]);
    let with_block =
        |extra: &[u8]| headers(1, END_STREAM | END_HEADERS, &[&get1[..], extra].concat());
    vec![
        case(
            "HPACK 2.3.3 an index past both tables",
            headers(1, END_STREAM | END_HEADERS, &[0x80 | 70]),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 6.1 index 0",
            headers(1, END_STREAM | END_HEADERS, &[0x80]),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 4.2 a table size past SETTINGS_HEADER_TABLE_SIZE",
            // 8,192: 31 in the prefix, then 8,161 in two bytes.
            headers(
                1,
                END_STREAM | END_HEADERS,
                &[&[0x3f, 0xe1, 0x3f][..], &get1].concat(),
            ),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 4.2 a table size update after a field",
            with_block(&[0x20]),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 4.2 a table size update to 0 at the start",
            headers(1, END_STREAM | END_HEADERS, &[&[0x20][..], &get1].concat()),
            Answer(1),
        ),
        case(
            "HPACK 5.1 an integer past 2^32",
            with_block(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 5.2 a Huffman string containing EOS",
            with_block(&huffman("x-a", &[0xff, 0xff, 0xff, 0xff])),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 5.2 Huffman padding longer than 7 bits",
            // 'a' (00011) and eleven 1s.
            with_block(&huffman("x-a", &[0x1f, 0xff])),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 5.2 Huffman padding of 0s",
            // 'a' (00011) and three 0s.
            with_block(&huffman("x-a", &[0x18])),
            GoAway(COMPRESSION),
        ),
        case(
            "HPACK 5.2 a Huffman string that decodes",
            // 'a' (00011) and three 1s.
            with_block(&huffman("x-a", &[0x1f])),
            Answer(1),
        ),
    ]
}
