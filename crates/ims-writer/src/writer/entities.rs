//! The entities a command reads, loaded on demand: images folded from their own streams,
//! tenants from the snapshots the log keeps with each append.

use ims_domain::{evolve, Actor, Command, ImageId, Owner, State, StreamId, TenantId};
use ims_log::LogError;

use super::RegionWriter;

impl RegionWriter {
    pub(super) fn version_of(&self, stream: &StreamId) -> u64 {
        match stream {
            StreamId::Image(id) => self.state.images.get(id).map_or(0, |i| i.version),
            StreamId::Tenant(id) => self.state.tenants.get(id).map_or(0, |t| t.version),
        }
    }

    pub(super) fn tenant_snapshot(&self, tenant: &TenantId) -> Option<(Vec<u8>, Vec<u8>)> {
        let key = StreamId::Tenant(tenant.clone()).to_string().into_bytes();
        self.state
            .tenants
            .get(tenant)
            .map(|loaded| (key, ims_log::encode(loaded)))
    }

    /// An image as its stream's events leave it. (Image snapshots that earlier builds wrote are
    /// not read: nothing keeps them up to date any more.)
    fn load_image(&self, id: ImageId) -> Result<Option<ims_domain::Image>, LogError> {
        // `evolve` changes an image only for events of its own stream.
        let mut folded = State::default();
        for envelope in self.log.read_stream(&StreamId::Image(id).to_string())? {
            evolve(&mut folded, &ims_log::decode_event(&envelope)?);
        }
        Ok(folded.images.remove(&id))
    }

    /// Loads what `command` reads: its images, their owners, its tenants and the actor.
    pub(super) fn load_entities(
        &mut self,
        command: &Command,
        actor: &Actor,
    ) -> Result<(), LogError> {
        let touches = command.touches();
        let mut tenants = touches.tenants;
        if let Actor::Tenant(tenant) = actor {
            tenants.push(tenant.clone());
        }
        for id in touches.images {
            if !self.state.images.contains_key(&id) {
                if let Some(image) = self.load_image(id)? {
                    self.state.images.insert(id, image);
                }
            }
            if let Some(Owner::Tenant(owner)) = self.state.images.get(&id).map(|i| i.owner.clone())
            {
                tenants.push(owner);
            }
        }
        for tenant in tenants {
            if !self.state.tenants.contains_key(&tenant) {
                if let Some(bytes) = self
                    .log
                    .snapshot(StreamId::Tenant(tenant.clone()).to_string().as_bytes())?
                {
                    let loaded = ims_log::decode_tenant_snapshot(&bytes, tenant.as_str())?;
                    self.state.tenants.insert(tenant, loaded);
                }
            }
        }
        Ok(())
    }
}
