//! Network partitions between processes: a process runs in a Linux network
//! namespace of its own (a "jail") joined to the host by a veth pair, and
//! the routes inside it can be cut per destination address or all at once.
//!
//! Services meant to be reached from a jail listen on a host address of
//! their own ([`HostAddress`], an extra address on the host's loopback), so
//! a jail can lose one service and keep the others: a consumer cut off from
//! the group coordinator but not from Redis.
//!
//! Needs root and `ip` (iproute2), as `cargo xtask test` has on CI. Every
//! namespace, link and address made here is removed on drop.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counter making names and subnets unique within the process.
static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> io::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A slot no other test process is using now: the pid picks the block,
/// the counter the slot in it.
fn slot() -> (u8, u8) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    (((pid + n / 60) % 250) as u8, (n % 60) as u8)
}

/// An address of the host's own (on its loopback), reachable from the host
/// and from every [`Jail`]. Removed on drop.
#[derive(Debug)]
pub struct HostAddress {
    address: Ipv4Addr,
}

impl HostAddress {
    /// Adds a fresh address `10.214.x.y/32` to the loopback.
    pub fn add() -> io::Result<Self> {
        let (block, slot) = slot();
        let address = Ipv4Addr::new(10, 214, block, slot + 1);
        ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])?;
        Ok(Self { address })
    }

    /// The address.
    pub fn ip(&self) -> Ipv4Addr {
        self.address
    }
}

impl Drop for HostAddress {
    fn drop(&mut self) {
        let _ = ip(&["addr", "del", &format!("{}/32", self.address), "dev", "lo"]);
    }
}

/// A network namespace whose only way out is a veth pair to the host.
#[derive(Debug)]
pub struct Jail {
    name: String,
    host_link: String,
}

impl Jail {
    /// Makes the namespace, its link to the host and a default route through
    /// it.
    pub fn new() -> io::Result<Self> {
        let (block, slot) = slot();
        let name = format!("mesj-{block}-{slot}");
        let host_link = format!("mesh{block}x{slot}");
        let jail_link = format!("mesj{block}x{slot}");
        let host_ip = Ipv4Addr::new(10, 213, block, slot * 4 + 1);
        let jail_ip = Ipv4Addr::new(10, 213, block, slot * 4 + 2);
        ip(&["netns", "add", &name])?;
        let jail = Self { name, host_link };
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", jail.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        ip(&[
            "link",
            "add",
            &jail.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &jail_link,
        ])?;
        ip(&["link", "set", &jail_link, "netns", &jail.name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &jail.host_link])?;
        ip(&["link", "set", &jail.host_link, "up"])?;
        inside(&["addr", "add", &format!("{jail_ip}/30"), "dev", &jail_link])?;
        inside(&["link", "set", &jail_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        inside(&["route", "add", "default", "via", &host_ip.to_string()])?;
        Ok(jail)
    }

    /// A command that runs `program` inside the jail.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts the jail off from `address`: packets to it are refused inside
    /// the jail (new connections fail with "no route to host", open ones
    /// stop getting anything through and time out).
    pub fn cut(&self, address: Ipv4Addr) -> io::Result<()> {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "route",
            "add",
            "unreachable",
            &format!("{address}/32"),
        ])
    }

    /// Undoes [`cut`](Self::cut).
    pub fn heal(&self, address: Ipv4Addr) -> io::Result<()> {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "route",
            "del",
            "unreachable",
            &format!("{address}/32"),
        ])
    }

    /// Cuts the jail off from everything, silently: its link goes down, so
    /// packets are dropped both ways and nobody is told.
    pub fn isolate(&self) -> io::Result<()> {
        ip(&["link", "set", &self.host_link, "down"])
    }

    /// Undoes [`isolate`](Self::isolate).
    pub fn rejoin(&self) -> io::Result<()> {
        ip(&["link", "set", &self.host_link, "up"])
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it
        // the host's end.
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
