//! The connection-ID table of forwarded QUIC: how a client that shows up from a new address
//! is found again, and how the server's chosen IDs are learned from its long headers.

use std::sync::Arc;

use tracing::debug;

use super::paths::QuicConn;
use crate::config::ListenerKey;
use crate::l4::udp::state::CidTable;
use crate::l4p::quic::packet;

impl CidTable {
    /// The forwarded connection of `key` a QUIC packet from an unknown address belongs to, by
    /// connection ID (the fixed bit may be greased, so any first byte is tried).
    pub(in crate::l4::udp) fn lookup(
        &self,
        key: ListenerKey,
        data: &[u8],
    ) -> Option<Arc<QuicConn>> {
        let first = *data.first()?;
        let table = &self.tables.by_cid;
        if table.is_empty() {
            return None;
        }
        if first & 0x80 != 0 {
            let len = *data.get(5)? as usize;
            let dcid = data.get(6..6 + len)?;
            return table
                .get(dcid)
                .and_then(|w| w.upgrade())
                .filter(|c| c.listener == key);
        }
        self.lens().find_map(|len| {
            packet::short_dcid(data, len)
                .and_then(|c| table.get(c))
                .and_then(|w| w.upgrade())
                .filter(|c| c.listener == key)
        })
    }

    /// Registers `cid` for `conn` unless some connection has it already (whoever repeats an
    /// ID seen in clear cannot take its entry over).
    pub(in crate::l4::udp) fn register(&self, cid: &[u8], conn: &Arc<QuicConn>) {
        if !conn.remember(cid) {
            return;
        }
        if self
            .tables
            .by_cid
            .insert_new(cid.to_vec(), Arc::downgrade(conn))
        {
            self.note_len(cid.len());
            self.tables.publish();
        }
    }

    /// Registers the source connection IDs of the server's long-header packets: the client
    /// will address the server with them, possibly from a new address.
    pub(in crate::l4::udp) fn learn_server_cids(&self, conn: &Arc<QuicConn>, mut d: &[u8]) {
        if d.first().is_none_or(|b| b & 0x80 == 0) {
            return;
        }
        if let Err(e) = packet::parse_long(d) {
            debug!(
                "QUIC server reply not parsed: {e} (first bytes {})",
                hex::encode(&d[..d.len().min(24)])
            );
        }
        while let Ok(h) = packet::parse_long(d) {
            if !h.scid.is_empty() && !conn.owns(&h.scid) {
                debug!("QUIC server connection ID {} learned", hex::encode(&h.scid));
                self.register(&h.scid, conn);
            }
            d = &d[h.end.min(d.len())..];
        }
    }
}
