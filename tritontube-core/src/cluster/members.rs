//! Member identity: node ids, and members reached at a new address.

use super::lock::Take;
use super::{ClusterManager, detached};
use crate::error::{Error, Result};
use crate::id::NodeAddr;
use crate::metadata::{ClusterState, MetadataStore};

impl ClusterManager {
    /// Records that the member named `addr` (its ring name) now answers at
    /// `to`: the node there must answer with the member's node id. Its
    /// tokens, and so its files, stay where they are; nothing is copied.
    /// Takes the admin lock, so it never races a ring change.
    pub async fn move_node(&self, addr: &NodeAddr, to: &NodeAddr) -> Result<()> {
        let (me, addr, to) = (self.clone(), addr.clone(), to.clone());
        detached(async move { me.move_attached(&addr, &to).await }).await
    }

    async fn move_attached(&self, addr: &NodeAddr, to: &NodeAddr) -> Result<()> {
        self.under_lock(Take::Now, async |_| self.move_locked(addr, to).await)
            .await
    }

    async fn move_locked(&self, addr: &NodeAddr, to: &NodeAddr) -> Result<()> {
        let state = self.state().await?;
        if state.value.pending.is_some() || state.value.previous.is_some() {
            return Err(Error::Refused {
                reason: "a ring change is under way or must be recovered first".into(),
            });
        }
        let Some(member) = state.value.nodes.iter().find(|n| n.addr == *addr).cloned() else {
            return Err(Error::UnknownNode {
                node: addr.to_string(),
            });
        };
        if let Some(other) = state
            .value
            .nodes
            .iter()
            .find(|n| n.addr != *addr && n.reach_addr() == to)
        {
            return Err(Error::Refused {
                reason: format!("{to} is where member {} is reached", other.addr),
            });
        }
        let there = self.health(to).await.map_err(|e| Error::Refused {
            reason: format!("nothing answers at {to}, so {addr} was not moved: {e}"),
        })?;
        if member.id.is_empty() {
            return Err(Error::Refused {
                reason: format!(
                    "{addr} joined before node ids were recorded, so the node at {to} cannot be \
                     proven to be it; start it at {addr} once so its id is recorded"
                ),
            });
        }
        if there.node_id != member.id {
            return Err(Error::Refused {
                reason: format!(
                    "the node at {to} has id {:?}, not {addr}'s id {}: it is another node",
                    there.node_id, member.id
                ),
            });
        }
        let mut next = state.value.clone();
        for n in next.nodes.iter_mut().filter(|n| n.addr == *addr) {
            n.reach = (to != addr).then(|| to.clone());
        }
        self.meta
            .put_cluster_state(Some(state.version), &next)
            .await?;
        self.nodes.apply(&next);
        tracing::info!(node = %addr, to = %to, "member reached at a new address; no data moved");
        Ok(())
    }

    /// Learns the ids of members recorded without one (asking each that
    /// answers), so identity checks and moves can rely on them.
    pub async fn record_member_ids(&self) -> Result<()> {
        let state = self.state().await?;
        if state.value.pending.is_some() || state.value.nodes.iter().all(|n| !n.id.is_empty()) {
            return Ok(());
        }
        // Under the lock, so this never races a ring change's own writes;
        // if a change holds it, a later start learns the ids.
        match self
            .under_lock(Take::Now, async |_| self.learn_member_ids().await)
            .await
        {
            Err(Error::Locked { .. }) => Ok(()),
            r => r,
        }
    }

    async fn learn_member_ids(&self) -> Result<()> {
        let state = self.state().await?;
        let mut next = state.value.clone();
        let mut learned = false;
        for n in next.nodes.iter_mut().filter(|n| n.id.is_empty()) {
            if let Ok(h) = self.health(n.reach_addr()).await
                && !h.node_id.is_empty()
            {
                n.id = h.node_id;
                learned = true;
            }
        }
        if learned {
            self.meta
                .put_cluster_state(Some(state.version), &next)
                .await?;
        }
        Ok(())
    }

    /// Refuses to add `addr` if it is a member under another spelling, or
    /// if the node there answers with a member's id (the same node reached
    /// by another address, or a node started on a copy of a member's
    /// directory): adding it would make the clean-up delete "surplus"
    /// copies that are the very files the member holds.
    pub(super) async fn check_identity(
        &self,
        state: &ClusterState,
        addr: &NodeAddr,
        id: &str,
    ) -> Result<()> {
        let spelled = |a: &NodeAddr| a.as_str().trim().to_ascii_lowercase();
        let members = state.nodes.iter().chain(state.pending.iter().flatten());
        for m in members {
            if spelled(&m.addr) == spelled(addr) {
                return Err(Error::NodeExists {
                    node: format!("{addr} (member {} under another spelling)", m.addr),
                });
            }
            if id.is_empty() {
                continue;
            }
            let member_id = if m.id.is_empty() {
                // A member recorded before ids existed: ask it.
                self.health(&m.addr)
                    .await
                    .map(|h| h.node_id)
                    .unwrap_or_default()
            } else {
                m.id.clone()
            };
            if member_id == id {
                return Err(Error::Refused {
                    reason: format!(
                        "{addr} answers with node id {id}, the id of member {}: it is the same \
                         node under another address, or a node started on a copy of its \
                         directory. Nothing was changed.",
                        m.addr
                    ),
                });
            }
        }
        Ok(())
    }
}
