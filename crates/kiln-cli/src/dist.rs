//! Multi-node training: `kiln coordinator`, and the node flags of `kiln train`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kiln::train::dist::{Collective, Coordinator, CoordinatorReport, DEFAULT_PORT, TcpPeer};

/// The node flags of `kiln train`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Train as one of N nodes (processes) of a data-parallel group: each takes its share of
    /// every step's micro-batches and all take the same optimizer steps. Needs
    /// --node-rank and --coordinator, and `fit.grad_accum_steps` of at least N.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nodes: usize,
    /// This node's rank, 0..N. Node 0 writes the run's files and, unless
    /// --external-coordinator, runs the coordinator.
    #[arg(long, default_value_t = 0, value_name = "I")]
    pub node_rank: usize,
    /// The coordinator's address (HOST:PORT; the port defaults to 29517). Node 0 listens
    /// there; the others connect to it.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// A coordinator runs elsewhere (`kiln coordinator`): node 0 connects to it like the others.
    #[arg(long)]
    pub external_coordinator: bool,
    /// Seconds a node waits for the others to join, and for each gradient exchange, before
    /// it fails naming the missing node.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub peer_timeout: u64,
}

/// This node's place in the group, while training.
pub struct Node {
    /// The node's handle on the group.
    pub group: Arc<dyn Collective>,
    coordinator: Option<JoinHandle<kiln::train::Result<CoordinatorReport>>>,
}

impl NodeArgs {
    /// Joins the group (starting the coordinator on node 0), or `None` for a one-node run.
    ///
    /// # Errors
    /// Inconsistent flags, an address that cannot be bound, or a group that does not gather.
    pub fn join(&self) -> Result<Option<Node>> {
        if self.nodes <= 1 && self.coordinator.is_none() {
            if self.node_rank != 0 {
                bail!("--node-rank {} needs --nodes above it", self.node_rank);
            }
            return Ok(None);
        }
        if self.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if self.node_rank >= self.nodes {
            bail!(
                "--node-rank {} is not below --nodes {}",
                self.node_rank,
                self.nodes
            );
        }
        let Some(addr) = &self.coordinator else {
            bail!("--nodes {} needs --coordinator HOST:PORT", self.nodes);
        };
        let addr = with_default_port(addr);
        let timeout = Duration::from_secs(self.peer_timeout.max(1));
        let coordinator = if self.node_rank == 0 && !self.external_coordinator {
            let c = Coordinator::bind(&addr, self.nodes).with_context(|| {
                format!("node 0 runs the coordinator on {addr} (or pass --external-coordinator)")
            })?;
            eprintln!(
                "coordinator listening on {} for {} nodes",
                c.local_addr()?,
                self.nodes
            );
            Some(std::thread::spawn(move || c.serve(timeout, timeout)))
        } else {
            None
        };
        let peer = TcpPeer::connect(&addr, self.node_rank, self.nodes, timeout, timeout)?;
        eprintln!(
            "node {} of {} joined the group at {addr}",
            self.node_rank, self.nodes
        );
        Ok(Some(Node {
            group: Arc::new(peer),
            coordinator,
        }))
    }
}

impl Node {
    /// Leaves the group; on node 0, waits for the coordinator to see every node leave.
    ///
    /// # Errors
    /// The coordinator failed.
    pub fn finish(self) -> Result<()> {
        let traffic = self.group.traffic();
        eprintln!(
            "node {}: {} all-reduce calls, {} sent, {} received, {:.2} s inside them",
            self.group.rank(),
            traffic.calls,
            bytes(traffic.sent),
            bytes(traffic.received),
            traffic.micros as f64 * 1e-6
        );
        drop(self.group);
        if let Some(c) = self.coordinator {
            let report = c
                .join()
                .map_err(|_| anyhow::anyhow!("the coordinator thread panicked"))??;
            eprintln!("coordinator: {} all-reduce rounds", report.rounds);
        }
        Ok(())
    }
}

fn with_default_port(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => addr.to_string(),
        _ => format!("{addr}:{DEFAULT_PORT}"),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Arguments of `kiln coordinator`.
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// Nodes to gather.
    #[arg(long, value_name = "N")]
    pub nodes: usize,
    /// Address to listen on (HOST:PORT); 0.0.0.0 accepts every interface.
    #[arg(long, default_value = "127.0.0.1:29517", value_name = "HOST:PORT")]
    pub listen: String,
    /// Seconds to wait for the nodes to join, and for each node's part of an exchange.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub peer_timeout: u64,
}

/// Runs `kiln coordinator` until every node has left; fails when one dies or hangs.
pub fn run_coordinator(args: &CoordinatorArgs) -> Result<()> {
    let addr = with_default_port(&args.listen);
    let c = Coordinator::bind(&addr, args.nodes)?;
    eprintln!(
        "coordinator listening on {} for {} nodes",
        c.local_addr()?,
        args.nodes
    );
    let timeout = Duration::from_secs(args.peer_timeout.max(1));
    let report = c.serve(timeout, timeout)?;
    eprintln!(
        "coordinator: {} nodes, {} all-reduce rounds, {} received, {} sent",
        report.world,
        report.rounds,
        bytes(report.received),
        bytes(report.sent)
    );
    Ok(())
}
