//! Replicas in separate processes (one per node), summed by a coordinator over TCP.
//!
//! Wire format: every message is a frame, a little-endian `u32` body length then the body,
//! whose first byte is the kind:
//! - `HELLO` (peer → coordinator): `b"kiln-dp1"`, rank `u32`, world `u32`;
//! - `WELCOME` (coordinator → peer): every rank has joined;
//! - `REDUCE` (both ways): element size `u8` (4 or 8), count `u64`, the values (little-endian);
//! - `DONE` (peer → coordinator): the peer leaves the group;
//! - `ERROR` (coordinator → peer): UTF-8 text; the run is over.
//!
//! The coordinator reads one `REDUCE` from every peer, adds them in rank order, and sends the
//! sum back to all. A peer that disconnects, leaves early, sends something else or stays silent
//! past the timeout ends the run: every other peer gets an `ERROR` naming it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Collective, Traffic};
use crate::{Result, TrainError};

/// The port `kiln coordinator` and `kiln train --coordinator` use when none is given.
pub const DEFAULT_PORT: u16 = 29_517;

const MAGIC: &[u8; 8] = b"kiln-dp1";
const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REDUCE: u8 = 3;
const DONE: u8 = 5;
const ERROR: u8 = 6;
/// Values per all-reduce round: larger buffers go in several rounds, so that frames and the
/// coordinator's buffers stay bounded (64 MiB of `f32`).
const CHUNK: usize = 1 << 24;
/// Largest frame accepted.
const MAX_FRAME: usize = 10 + 8 * CHUNK;

/// Writes one frame: the length, then the body.
fn write_frame(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<u64> {
    stream.write_all(&(body.len() as u32).to_le_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    Ok(4 + body.len() as u64)
}

/// Reads one frame's body into `buf`, reusing its memory (large buffers are kept from round
/// to round: fresh ones would fault in every page again).
fn read_frame_into(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    buf.resize(len, 0);
    stream.read_exact(buf)
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    read_frame_into(stream, &mut body)?;
    Ok(body)
}

/// A value the wire carries: `f32` or `f64`, little-endian.
trait Elem: Copy + std::ops::AddAssign {
    const SIZE: u8;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

impl Elem for f32 {
    const SIZE: u8 = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        f32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
}

impl Elem for f64 {
    const SIZE: u8 = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        f64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
}

/// The `REDUCE` body of `values`, written into `out`.
fn encode<T: Elem>(values: &[T], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(10 + values.len() * T::SIZE as usize);
    out.push(REDUCE);
    out.push(T::SIZE);
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for &v in values {
        v.put(out);
    }
}

/// The `REDUCE` body of the element-wise sum of `parts` (value bytes, one per rank), added in
/// rank order into `acc`, written into `out`.
fn encode_sum<T: Elem>(parts: &[&[u8]], acc: &mut Vec<T>, out: &mut Vec<u8>) {
    let size = T::SIZE as usize;
    acc.clear();
    acc.extend(parts[0].chunks_exact(size).map(T::get));
    for part in &parts[1..] {
        for (a, c) in acc.iter_mut().zip(part.chunks_exact(size)) {
            *a += T::get(c);
        }
    }
    encode(acc, out);
}

/// Sends `message` as an `ERROR` to each peer, then lets them read it before the sockets
/// close: a socket closed with unread input is reset, and a reset can discard the message
/// before the peer reads it. So the write side is shut and what the peers still send is read
/// and dropped until they hang up (at most 2 s in all).
fn tell_and_close<'a>(peers: impl Iterator<Item = &'a mut TcpStream>, message: &str) {
    let mut body = vec![ERROR];
    body.extend_from_slice(message.as_bytes());
    let mut told = Vec::new();
    for p in peers {
        if write_frame(p, &body).is_ok() {
            let _ = p.shutdown(std::net::Shutdown::Write);
            told.push(p);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = vec![0u8; 1 << 16];
    for p in told {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || p.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match p.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn describe(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!(
                "sent nothing for {:.0} s (the timeout)",
                timeout.as_secs_f64()
            )
        }
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "closed the connection (the process stopped or died)".into()
        }
        _ => e.to_string(),
    }
}

/// `(element size, count, values)` of a `REDUCE` body.
fn parse_reduce(body: &[u8]) -> std::result::Result<(u8, usize, &[u8]), String> {
    if body.len() < 10 || body[0] != REDUCE {
        return Err(format!(
            "a message of kind {} instead of an all-reduce",
            body[0]
        ));
    }
    let size = body[1];
    let count = u64::from_le_bytes(body[2..10].try_into().expect("8 bytes")) as usize;
    let values = &body[10..];
    if !(size == 4 || size == 8) || values.len() != count * size as usize {
        return Err(format!(
            "a malformed all-reduce ({count} values of {size} bytes in {} bytes)",
            values.len()
        ));
    }
    Ok((size, count, values))
}

/// What a coordinator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorReport {
    /// Peers served.
    pub world: usize,
    /// All-reduce rounds completed.
    pub rounds: u64,
    /// Bytes received from all peers.
    pub received: u64,
    /// Bytes sent to all peers.
    pub sent: u64,
}

/// The hub of a multi-process group: gathers every peer, then sums their all-reduce buffers.
///
/// Start it on one node (`kiln coordinator`, or the first node of `kiln train`) before or
/// after the peers: they retry until the join timeout.
#[derive(Debug)]
pub struct Coordinator {
    listener: TcpListener,
    world: usize,
}

impl Coordinator {
    /// Listens on `addr` (`HOST:PORT`; port 0 picks a free one) for `world` peers.
    ///
    /// # Errors
    /// [`TrainError::Distributed`] when the address cannot be bound or `world` is 0.
    pub fn bind(addr: &str, world: usize) -> Result<Self> {
        let fail = |message: String| TrainError::Distributed {
            rank: 0,
            world,
            message,
        };
        if world == 0 {
            return Err(fail("a group needs at least one node".into()));
        }
        let listener = TcpListener::bind(addr)
            .map_err(|e| fail(format!("the coordinator cannot listen on {addr}: {e}")))?;
        Ok(Self { listener, world })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| self.fail(format!("the coordinator's address: {e}")))
    }

    fn fail(&self, message: String) -> TrainError {
        TrainError::Distributed {
            rank: 0,
            world: self.world,
            message: format!("coordinator: {message}"),
        }
    }

    /// Waits up to `join_timeout` for every rank to say hello, then serves all-reduce rounds
    /// until every peer is done. Each peer has `timeout` to send its part of a round.
    ///
    /// # Errors
    /// [`TrainError::Distributed`]: a rank did not join in time, or a peer disconnected,
    /// left early, stayed silent past `timeout` or sent a mismatched buffer. The other peers
    /// are told why before this returns.
    pub fn serve(self, join_timeout: Duration, timeout: Duration) -> Result<CoordinatorReport> {
        let mut peers = self.gather(join_timeout)?;
        let mut report = CoordinatorReport {
            world: self.world,
            rounds: 0,
            received: 0,
            sent: 0,
        };
        for p in peers.iter_mut().flatten() {
            report.sent += write_frame(p, &[WELCOME])
                .map_err(|e| self.fail(format!("greeting a peer: {e}")))?;
            p.set_read_timeout(Some(timeout))
                .map_err(|e| self.fail(e.to_string()))?;
        }
        let mut peers: Vec<TcpStream> = peers.into_iter().map(Option::unwrap).collect();
        // One receive buffer per peer and one for the sum, kept across rounds.
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); self.world];
        let mut body = Vec::new();
        let (mut acc32, mut acc64) = (Vec::<f32>::new(), Vec::<f64>::new());
        loop {
            let mut problem = None;
            for (rank, p) in peers.iter_mut().enumerate() {
                match read_frame_into(p, &mut bodies[rank]) {
                    Ok(()) => report.received += 4 + bodies[rank].len() as u64,
                    Err(e) => {
                        problem = Some((rank, describe(&e, timeout)));
                        break;
                    }
                }
            }
            let bodies = match problem {
                Some(_) => &bodies[..0],
                None => &bodies[..],
            };
            let done = bodies.iter().filter(|b| b[0] == DONE).count();
            if problem.is_none() && done == self.world {
                return Ok(report);
            }
            if problem.is_none() && done > 0 {
                let rank = bodies
                    .iter()
                    .position(|b| b[0] == DONE)
                    .expect("one is done");
                problem = Some((
                    rank,
                    format!(
                        "left the run (finished or failed) while others were at all-reduce \
                         round {}",
                        report.rounds + 1
                    ),
                ));
            }
            let parsed: Vec<_> = bodies.iter().map(|b| parse_reduce(b)).collect();
            if problem.is_none()
                && let Some((rank, Err(e))) = parsed.iter().enumerate().find(|(_, p)| p.is_err())
            {
                problem = Some((rank, format!("sent {e}", e = e.clone())));
            }
            if problem.is_none() {
                let ok: Vec<_> = parsed.into_iter().map(|p| p.expect("checked")).collect();
                let (size, count) = (ok[0].0, ok[0].1);
                if let Some(rank) = ok.iter().position(|p| p.0 != size || p.1 != count) {
                    problem = Some((
                        rank,
                        format!(
                            "sent {} values of {} bytes where rank 0 sent {count} of {size}",
                            ok[rank].1, ok[rank].0
                        ),
                    ));
                } else {
                    let parts: Vec<&[u8]> = ok.iter().map(|p| p.2).collect();
                    match size {
                        4 => encode_sum(&parts, &mut acc32, &mut body),
                        _ => encode_sum(&parts, &mut acc64, &mut body),
                    }
                    for (rank, p) in peers.iter_mut().enumerate() {
                        match write_frame(p, &body) {
                            Ok(n) => report.sent += n,
                            Err(e) => {
                                problem = Some((rank, describe(&e, timeout)));
                                break;
                            }
                        }
                    }
                    if problem.is_none() {
                        report.rounds += 1;
                        continue;
                    }
                }
            }
            let (rank, why) = problem.expect("a problem ends the loop");
            let message = format!("node {rank} {why}");
            let others = peers
                .iter_mut()
                .enumerate()
                .filter(|(r, _)| *r != rank)
                .map(|(_, p)| p);
            tell_and_close(others, &message);
            return Err(self.fail(message));
        }
    }

    /// Accepts connections until every rank has said hello; refuses strangers and duplicates.
    fn gather(&self, join_timeout: Duration) -> Result<Vec<Option<TcpStream>>> {
        let deadline = Instant::now() + join_timeout;
        let mut peers: Vec<Option<TcpStream>> = (0..self.world).map(|_| None).collect();
        self.listener
            .set_nonblocking(true)
            .map_err(|e| self.fail(e.to_string()))?;
        while peers.iter().any(Option::is_none) {
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = (0..self.world).filter(|&r| peers[r].is_none()).collect();
                let message = format!(
                    "nodes {missing:?} did not join within {:.0} s",
                    join_timeout.as_secs_f64()
                );
                tell_and_close(peers.iter_mut().flatten(), &message);
                return Err(self.fail(message));
            }
            let (mut stream, from) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(self.fail(format!("accepting a peer: {e}"))),
            };
            let setup = stream
                .set_nonblocking(false)
                .and_then(|_| stream.set_read_timeout(Some(Duration::from_secs(10))))
                .and_then(|_| stream.set_nodelay(true));
            if setup.is_err() {
                continue;
            }
            let refuse = |stream: &mut TcpStream, why: String| {
                let mut body = vec![ERROR];
                body.extend_from_slice(why.as_bytes());
                let _ = write_frame(stream, &body);
            };
            let body = match read_frame(&mut stream) {
                Ok(b) => b,
                Err(_) => continue,
            };
            if body.len() != 17 || body[0] != HELLO || &body[1..9] != MAGIC {
                refuse(
                    &mut stream,
                    format!("{from} is not a kiln data-parallel peer"),
                );
                continue;
            }
            let rank = u32::from_le_bytes(body[9..13].try_into().expect("4 bytes")) as usize;
            let world = u32::from_le_bytes(body[13..17].try_into().expect("4 bytes")) as usize;
            if world != self.world {
                refuse(
                    &mut stream,
                    format!(
                        "node {rank} expects {world} nodes, the coordinator {}",
                        self.world
                    ),
                );
                continue;
            }
            if rank >= world || peers[rank].is_some() {
                refuse(
                    &mut stream,
                    format!("node rank {rank} is taken or out of range 0..{world}"),
                );
                continue;
            }
            peers[rank] = Some(stream);
        }
        Ok(peers)
    }
}

/// A peer's connection and its buffers, kept across calls.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    input: Vec<u8>,
}

/// One node's replica of a multi-process group, connected to its [`Coordinator`].
#[derive(Debug)]
pub struct TcpPeer {
    conn: Mutex<Conn>,
    addr: String,
    rank: usize,
    world: usize,
    timeout: Duration,
    sent: AtomicU64,
    received: AtomicU64,
    calls: AtomicU64,
    micros: AtomicU64,
}

impl TcpPeer {
    /// Connects to the coordinator at `addr` as node `rank` of `world`, retrying until
    /// `join_timeout` while the coordinator is not up, and waits for every node to join. Each
    /// later all-reduce waits at most `timeout` for the sum.
    ///
    /// # Errors
    /// [`TrainError::Distributed`]: no coordinator answered, it refused this node (rank taken,
    /// another node count), or the other nodes did not join within `join_timeout`.
    pub fn connect(
        addr: &str,
        rank: usize,
        world: usize,
        join_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let fail = |message: String| TrainError::Distributed {
            rank,
            world,
            message,
        };
        if rank >= world {
            return Err(fail(format!(
                "node rank {rank} is not below the node count {world}"
            )));
        }
        let deadline = Instant::now() + join_timeout;
        let mut stream = loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(|e| fail(format!("coordinator address {addr}: {e}")))?
                .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok());
            match attempt {
                Some(s) => break s,
                None if Instant::now() >= deadline => {
                    return Err(fail(format!(
                        "no coordinator answered at {addr} within {:.0} s (start it with \
                         `kiln coordinator` or as node 0)",
                        join_timeout.as_secs_f64()
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let io = |e: std::io::Error| fail(format!("coordinator at {addr}: {e}"));
        stream.set_nodelay(true).map_err(io)?;
        let mut hello = vec![HELLO];
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&(rank as u32).to_le_bytes());
        hello.extend_from_slice(&(world as u32).to_le_bytes());
        let sent = write_frame(&mut stream, &hello).map_err(io)?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        stream.set_read_timeout(Some(wait)).map_err(io)?;
        let answer = read_frame(&mut stream).map_err(|e| {
            fail(format!(
                "the coordinator at {addr} did not gather all {world} nodes: it {}",
                describe(&e, wait)
            ))
        })?;
        match answer[0] {
            WELCOME => {}
            ERROR => {
                return Err(fail(format!(
                    "the coordinator at {addr} refused: {}",
                    String::from_utf8_lossy(&answer[1..])
                )));
            }
            k => return Err(fail(format!("the coordinator at {addr} sent kind {k}"))),
        }
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        Ok(Self {
            conn: Mutex::new(Conn {
                stream,
                out: Vec::new(),
                input: Vec::new(),
            }),
            addr: addr.to_string(),
            rank,
            world,
            timeout,
            sent: AtomicU64::new(sent),
            received: AtomicU64::new(4 + answer.len() as u64),
            calls: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        })
    }

    fn fail(&self, message: String) -> TrainError {
        TrainError::Distributed {
            rank: self.rank,
            world: self.world,
            message,
        }
    }

    fn exchange<T: Elem>(&self, values: &mut [T]) -> Result<()> {
        let start = Instant::now();
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let Conn { stream, out, input } = &mut *guard;
        encode(values, out);
        let n = match write_frame(stream, out) {
            Ok(n) => n,
            Err(e) => {
                // The coordinator may have said why before it closed.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                if read_frame_into(stream, input).is_ok() && input[0] == ERROR {
                    return Err(self.fail(format!(
                        "the run stopped: {}",
                        String::from_utf8_lossy(&input[1..])
                    )));
                }
                return Err(self.fail(format!(
                    "sending to the coordinator at {}: it {}",
                    self.addr,
                    describe(&e, self.timeout)
                )));
            }
        };
        self.sent.fetch_add(n, Ordering::Relaxed);
        read_frame_into(stream, input).map_err(|e| {
            self.fail(format!(
                "waiting for the coordinator at {}: it {}",
                self.addr,
                describe(&e, self.timeout)
            ))
        })?;
        self.received
            .fetch_add(4 + input.len() as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if input[0] == ERROR {
            return Err(self.fail(format!(
                "the run stopped: {}",
                String::from_utf8_lossy(&input[1..])
            )));
        }
        let (got_size, got_count, bytes) = parse_reduce(input).map_err(|e| self.fail(e))?;
        if got_size != T::SIZE || got_count != values.len() {
            return Err(self.fail(format!(
                "the coordinator answered {got_count} values for {}",
                values.len()
            )));
        }
        let size = T::SIZE as usize;
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(size)) {
            *v = T::get(b);
        }
        self.micros
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Collective for TcpPeer {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()> {
        values.chunks_mut(CHUNK).try_for_each(|c| self.exchange(c))
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        values.chunks_mut(CHUNK).try_for_each(|c| self.exchange(c))
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
        }
    }
}

impl Drop for TcpPeer {
    fn drop(&mut self) {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write_frame(&mut conn.stream, &[DONE]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(
        world: usize,
        timeout: Duration,
    ) -> (String, std::thread::JoinHandle<Result<CoordinatorReport>>) {
        let c = Coordinator::bind("127.0.0.1:0", world).unwrap();
        let addr = c.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || c.serve(Duration::from_secs(20), timeout));
        (addr, h)
    }

    /// Rank `rank` of `world`, joined within 20 s, waiting at most `timeout` per exchange.
    fn peer(addr: &str, rank: usize, world: usize, timeout: Duration) -> TcpPeer {
        TcpPeer::connect(addr, rank, world, Duration::from_secs(20), timeout).unwrap()
    }

    /// Runs `f` with each rank's peer in its own thread; the results in rank order.
    fn on_every_rank<T: Send + 'static>(
        addr: &str,
        world: usize,
        timeout: Duration,
        f: fn(TcpPeer, usize) -> T,
    ) -> Vec<T> {
        let threads: Vec<_> = (0..world)
            .map(|rank| {
                let addr = addr.to_string();
                std::thread::spawn(move || f(peer(&addr, rank, world, timeout), rank))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn peers_sum_over_loopback_in_rank_order() {
        let (addr, coordinator) = start(3, Duration::from_secs(20));
        let results = on_every_rank(&addr, 3, Duration::from_secs(20), |p, rank| {
            let mut v = vec![(rank + 1) as f32 * 0.1; 5];
            p.all_reduce_f32(&mut v).unwrap();
            let mut c = [rank as f64, 1.0];
            p.all_reduce_f64(&mut c).unwrap();
            (v, c, p.traffic())
        });
        for (v, c, traffic) in results {
            assert_eq!(v[0].to_bits(), (0.1f32 + 0.2f32 + 0.3f32).to_bits());
            assert_eq!(c, [3.0, 3.0]);
            assert_eq!(traffic.calls, 2);
            assert!(traffic.sent > 20 * 4);
        }
        let report = coordinator.join().unwrap().unwrap();
        assert_eq!(report.rounds, 2);
    }

    #[test]
    fn buffers_longer_than_a_round_go_in_several() {
        let (addr, coordinator) = start(2, Duration::from_secs(60));
        let results = on_every_rank(&addr, 2, Duration::from_secs(60), |p, rank| {
            let mut v: Vec<f32> = (0..CHUNK + 5).map(|i| (i % 1000) as f32).collect();
            v[CHUNK + 4] = rank as f32 + 0.5;
            p.all_reduce_f32(&mut v).unwrap();
            (v, p.traffic().calls)
        });
        for (v, calls) in results {
            assert_eq!(calls, 2);
            assert_eq!(v[CHUNK + 4], 2.0);
            assert!(
                v[..CHUNK + 4]
                    .iter()
                    .enumerate()
                    .all(|(i, x)| *x == 2.0 * (i % 1000) as f32)
            );
        }
        assert_eq!(coordinator.join().unwrap().unwrap().rounds, 2);
    }

    #[test]
    fn a_dead_peer_fails_the_others_with_its_rank() {
        let (addr, coordinator) = start(2, Duration::from_secs(60));
        let a = addr.clone();
        let first = std::thread::spawn(move || {
            let p = peer(&a, 0, 2, Duration::from_secs(60));
            let mut v = [1.0f32];
            p.all_reduce_f32(&mut v).unwrap();
            let start = Instant::now();
            let err = p.all_reduce_f32(&mut v).unwrap_err().to_string();
            (err, start.elapsed())
        });
        {
            let p = peer(&addr, 1, 2, Duration::from_secs(60));
            let mut v = [1.0f32];
            p.all_reduce_f32(&mut v).unwrap();
            // Dies without a word: the socket closes under it.
            let stream = p.conn.lock().unwrap().stream.try_clone().unwrap();
            stream.shutdown(std::net::Shutdown::Both).unwrap();
            std::mem::forget(p);
        }
        let (err, took) = first.join().unwrap();
        assert!(err.contains("node 1 closed the connection"), "{err}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        let err = coordinator.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("node 1"), "{err}");
    }

    #[test]
    fn a_silent_peer_times_out_and_the_others_hear_why() {
        let (addr, coordinator) = start(2, Duration::from_millis(800));
        let a = addr.clone();
        let silent = std::thread::spawn(move || {
            let p = peer(&a, 1, 2, Duration::from_secs(20));
            let mut v = [1.0f32];
            p.all_reduce_f32(&mut v).unwrap();
            // Alive but silent (a hung process): the connection stays open.
            std::thread::sleep(Duration::from_secs(3));
            p
        });
        let p = peer(&addr, 0, 2, Duration::from_secs(20));
        let mut v = [1.0f32];
        p.all_reduce_f32(&mut v).unwrap();
        let start = Instant::now();
        let err = p.all_reduce_f32(&mut v).unwrap_err().to_string();
        assert!(err.contains("node 1 sent nothing for 1 s"), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(coordinator.join().unwrap().is_err());
        drop(silent.join().unwrap());
    }

    #[test]
    fn refusals_name_the_problem() {
        // No coordinator at all.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let err = TcpPeer::connect(
            &free,
            0,
            2,
            Duration::from_millis(500),
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no coordinator answered"), "{err}");
        // A node count the coordinator does not serve, then a node that never comes.
        let (addr, coordinator) = {
            let c = Coordinator::bind("127.0.0.1:0", 2).unwrap();
            let addr = c.local_addr().unwrap().to_string();
            (
                addr,
                std::thread::spawn(move || c.serve(Duration::from_secs(2), Duration::from_secs(5))),
            )
        };
        let err = TcpPeer::connect(&addr, 0, 3, Duration::from_secs(5), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expects 3 nodes"), "{err}");
        let err = TcpPeer::connect(&addr, 0, 2, Duration::from_secs(5), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodes [1] did not join"), "{err}");
        assert!(coordinator.join().unwrap().is_err());
    }
}
