//! The `catalog` projection: image records and the indexes the queries of DESIGN.md section 5
//! read, plus each tenant's notification feed.
//!
//! Keys (one tree; ids are the 16 bytes of the image id, so each index is in id order, which for
//! UUID v7 ids is creation order):
//! - `p`: the checkpoint;
//! - `i` + id: the image (the domain's `Image`, encoded by the log's codec);
//! - `v` + tenant + 0 + id: images private to the tenant that it may use, value [`OWNED`] for its
//!   own images and empty for accepted shares (one key for both roles: sled holds memory per key);
//! - `g` + id: images every tenant sees (public, Marketplace);
//! - `m` + tenant + 0 + id: the tenant's memberships, value = member status;
//! - `f` + tenant + 0 + position + index: the tenant's feed items;
//! - `F` + position: feed items for every tenant (deprecated public images);
//! - `b` + tenant + 0 + id: the tenant's images in its recycle bin (no other entry while there);
//! - `l` + tenant + 0 + family + 0 + id: images of a family the tenant may use privately (its own,
//!   accepted shares), `L` + family + 0 + id: those every tenant sees; `latest` reads these;
//! - `o` + tenant: the organization the tenant belongs to;
//! - `O` + organization + 0 + id: images shared with the organization (value: the accepted
//!   member status), `N` + organization + 0 + family + 0 + id: those of a family.

use ims_domain::{
    evolve_image, new_image, CopyStatus, DeprecationState, Event, Image, ImageClass, ImageId,
    ImageStatus, MemberStatus, OrganizationId, TenantId,
};
use ims_log::Envelope;
use serde::{Deserialize, Serialize};

use crate::store::{Changes, Store};
use crate::{Fold, Notice, ProjectionError};

/// A feed item as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRecord {
    pub kind: String,
    pub image_id: ImageId,
    pub message: String,
    pub at_ms: u64,
}

/// A [`FeedRecord`] borrowed from a [`Notice`]: the same encoding, without copying the message.
#[derive(Serialize)]
struct FeedRecordRef<'a> {
    kind: &'a str,
    image_id: ImageId,
    message: &'a str,
    at_ms: u64,
}

/// The value of a `v` entry for an image the tenant owns.
pub const OWNED: &[u8] = b"o";

pub fn tenant_key(tag: u8, tenant: &TenantId, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + tenant.as_str().len() + suffix.len());
    key.push(tag);
    key.extend_from_slice(tenant.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(suffix);
    key
}

/// The prefix of a family's index for `tenant` (`None`: the images every tenant sees); the
/// image id follows it.
pub fn family_prefix(tenant: Option<&TenantId>, family: &str) -> Vec<u8> {
    let mut suffix = family.as_bytes().to_vec();
    suffix.push(0);
    match tenant {
        Some(tenant) => tenant_key(b'l', tenant, &suffix),
        None => [&b"L"[..], &suffix].concat(),
    }
}

/// `tag` + organization + 0 + `suffix`: the organization's share indexes.
pub fn organization_key(tag: u8, organization: &OrganizationId, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + organization.as_str().len() + suffix.len());
    key.push(tag);
    key.extend_from_slice(organization.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(suffix);
    key
}

/// The key of the organization a tenant belongs to.
pub fn tenant_organization_key(tenant: &TenantId) -> Vec<u8> {
    [&b"o"[..], tenant.as_str().as_bytes()].concat()
}

fn family_key(tenant: Option<&TenantId>, family: &str, id: &[u8; 16]) -> Vec<u8> {
    [family_prefix(tenant, family), id.to_vec()].concat()
}

pub fn global_key(id: &ImageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b'g');
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn member_status_byte(status: MemberStatus) -> u8 {
    match status {
        MemberStatus::Pending => b'p',
        MemberStatus::Accepted => b'a',
        MemberStatus::Rejected => b'r',
    }
}

pub fn member_status_from_byte(byte: u8) -> MemberStatus {
    match byte {
        b'a' => MemberStatus::Accepted,
        b'r' => MemberStatus::Rejected,
        _ => MemberStatus::Pending,
    }
}

/// Which of an image's index entries an event can change.
#[derive(Clone, Copy)]
enum Reindex<'a> {
    /// Every entry (created, deleted, listed, delisted).
    All,
    /// Only the membership entries of these tenants (shared, unshared, accepted, rejected).
    Members(&'a [TenantId]),
}

impl Reindex<'_> {
    /// The entries this event can change, or `None` when it changes no index.
    fn of(event: &Event) -> Option<Reindex<'_>> {
        match event {
            Event::ImageCreated(_)
            | Event::ImageDeleted { .. }
            | Event::ImageRecycled { .. }
            | Event::ImageRestored { .. }
            | Event::FamilySet { .. }
            | Event::ImageSharedWithOrganizations { .. }
            | Event::ImageUnsharedFromOrganizations { .. }
            | Event::ListedOnMarketplace { .. }
            | Event::DelistedFromMarketplace { .. } => Some(Reindex::All),
            Event::ImageShared { tenants, .. } | Event::ImageUnshared { tenants, .. } => {
                Some(Reindex::Members(tenants))
            }
            Event::ShareAccepted { tenant, .. } | Event::ShareRejected { tenant, .. } => {
                Some(Reindex::Members(std::slice::from_ref(tenant)))
            }
            _ => None,
        }
    }
}

/// The index entries of `image` in its current state, within `scope`, sorted.
fn index_entries(image: &Image, scope: Reindex) -> Vec<(Vec<u8>, Vec<u8>)> {
    let id = image.id.as_bytes();
    let family = image.family.as_deref();
    match (image.status, image.owner.tenant()) {
        (ImageStatus::Deleted, _) => return Vec::new(),
        // In the recycle bin: listed there, and nowhere else.
        (ImageStatus::Recycled, Some(owner)) => {
            return match scope {
                Reindex::All => vec![(tenant_key(b'b', owner, id), Vec::new())],
                Reindex::Members(_) => Vec::new(),
            }
        }
        _ => {}
    }
    let mut entries = Vec::with_capacity(3 + 2 * image.members.len());
    let mut add_member = |member: &TenantId, status: MemberStatus| {
        entries.push((
            tenant_key(b'm', member, id),
            vec![member_status_byte(status)],
        ));
        if status == MemberStatus::Accepted {
            entries.push((tenant_key(b'v', member, id), Vec::new()));
            if let Some(family) = family {
                entries.push((family_key(Some(member), family, id), Vec::new()));
            }
        }
    };
    match scope {
        Reindex::All => {
            for (member, status) in &image.members {
                add_member(member, *status);
            }
            let everyone = matches!(image.class, ImageClass::Public | ImageClass::Marketplace);
            if let Some(owner) = image.owner.tenant() {
                entries.push((tenant_key(b'v', owner, id), OWNED.to_vec()));
            }
            if everyone {
                entries.push((global_key(&image.id), Vec::new()));
            }
            if let Some(family) = family {
                if let Some(owner) = image.owner.tenant() {
                    entries.push((family_key(Some(owner), family, id), Vec::new()));
                }
                if everyone {
                    entries.push((family_key(None, family, id), Vec::new()));
                }
            }
            for organization in &image.organizations {
                entries.push((
                    organization_key(b'O', organization, id),
                    vec![member_status_byte(MemberStatus::Accepted)],
                ));
                if let Some(family) = family {
                    let mut suffix = family.as_bytes().to_vec();
                    suffix.push(0);
                    suffix.extend_from_slice(id);
                    entries.push((organization_key(b'N', organization, &suffix), Vec::new()));
                }
            }
        }
        Reindex::Members(tenants) => {
            for tenant in tenants {
                if let Some(status) = image.members.get(tenant) {
                    add_member(tenant, *status);
                }
            }
        }
    }
    entries.sort();
    entries
}

/// Every index entry `image` should have: what the fold's scoped updates must add up to, which
/// the tests check against whole rebuilds.
pub fn all_index_entries(image: &Image) -> Vec<(Vec<u8>, Vec<u8>)> {
    index_entries(image, Reindex::All)
}

/// Applies the difference between two sorted entry lists.
fn apply_index_diff(
    changes: &mut Changes,
    before: Vec<(Vec<u8>, Vec<u8>)>,
    after: Vec<(Vec<u8>, Vec<u8>)>,
) {
    let mut before = before.into_iter().peekable();
    let mut after = after.into_iter().peekable();
    loop {
        match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(_), None) => changes.remove(before.next().unwrap().0),
            (None, Some(_)) => {
                let (key, value) = after.next().unwrap();
                changes.insert(key, value);
            }
            (Some((old_key, old_value)), Some((new_key, new_value))) => {
                match old_key.cmp(new_key) {
                    std::cmp::Ordering::Less => changes.remove(before.next().unwrap().0),
                    std::cmp::Ordering::Greater => {
                        let (key, value) = after.next().unwrap();
                        changes.insert(key, value);
                    }
                    std::cmp::Ordering::Equal => {
                        let changed = old_value != new_value;
                        before.next();
                        let (key, value) = after.next().unwrap();
                        if changed {
                            changes.insert(key, value);
                        }
                    }
                }
            }
        }
    }
}

/// The catalog fold.
#[derive(Clone, Copy, Debug, Default)]
pub struct Catalog;

impl Fold for Catalog {
    const NAME: &'static str = "catalog";
    /// 2: owned images are `v` entries marked [`OWNED`] (1 had a separate `o` index).
    /// 3: image records carry the imported file's facts and a failure reason.
    /// 4: image records carry the time of the last launch.
    /// 5: image records carry their deprecation.
    /// 6: image records carry their recycle bin stay and family; the `b`, `l` and `L` indexes.
    const LAYOUT: u32 = 6;

    fn wants(&self, event_type: &str) -> bool {
        // Tenant events are not about images.
        !matches!(
            event_type,
            "tenant_registered" | "quota_set" | "usage_recorded" | "retention_set"
        )
    }

    fn apply(
        &self,
        store: &Store,
        changes: &mut Changes,
        envelope: &Envelope,
        event: &Event,
    ) -> Result<Vec<Notice>, ProjectionError> {
        if let Event::TenantJoinedOrganization {
            tenant,
            organization,
        } = event
        {
            changes.insert(
                tenant_organization_key(tenant),
                organization.as_str().as_bytes().to_vec(),
            );
            return Ok(Vec::new());
        }
        let Some(id) = event
            .image_id()
            .filter(|_| !matches!(event, Event::UsageRecorded { .. }))
        else {
            return Ok(Vec::new());
        };
        // Only these events can change who sees an image; the others leave every index alone.
        let reindex = Reindex::of(event);
        let (before_entries, members_before) = match (changes.image(store, id)?, reindex) {
            (Some(image), Some(scope)) => {
                // Members of an image purged from the bin were told when it went there.
                let members = (matches!(event, Event::ImageDeleted { .. })
                    && image.status != ImageStatus::Recycled)
                    .then(|| image.members.keys().cloned().collect::<Vec<TenantId>>());
                (index_entries(image, scope), members)
            }
            _ => (Vec::new(), None),
        };
        let after = match (event, changes.image(store, id)?) {
            (Event::ImageCreated(new), _) => {
                changes.put_image(new_image(new));
                changes.image(store, id)?.expect("just put")
            }
            (_, Some(image)) => {
                evolve_image(image, event);
                image
            }
            // An event about an image this model never saw: nothing to show.
            (_, None) => return Ok(Vec::new()),
        };
        let notices = feed_items(members_before.as_deref(), after, event, envelope.position());
        if let Some(scope) = reindex {
            let after_entries = index_entries(after, scope);
            apply_index_diff(changes, before_entries, after_entries);
        }
        for (index, notice) in notices.iter().enumerate() {
            let record = FeedRecordRef {
                kind: notice.kind,
                image_id: id,
                message: &notice.message,
                at_ms: envelope.body.recorded_at_ms,
            };
            let mut suffix = envelope.position().to_be_bytes().to_vec();
            suffix.extend_from_slice(&(index as u16).to_be_bytes());
            let key = match &notice.tenant {
                Some(tenant) => tenant_key(b'f', tenant, &suffix),
                None => [&[b'F'][..], &suffix].concat(),
            };
            changes.insert(key, ims_log::encode(&record));
        }
        Ok(notices)
    }
}

/// What the lifecycle events tell the image's members (or everyone, for the deprecation of a
/// public or Marketplace image): deprecated or obsolete with its replacement, deleted into the
/// recycle bin, restored from it.
fn lifecycle_items(after: &Image, event: &Event, owner: &str, position: u64) -> Vec<Notice> {
    let (id, name) = (after.id, &after.name);
    let (kind, message, to_everyone) = match event {
        Event::ImageRecycled { .. } => (
            "shared_image_deleted",
            format!("{owner} deleted image {id} ({name}), which is shared with you"),
            false,
        ),
        Event::ImageRestored { .. } => (
            "shared_image_restored",
            format!("{owner} restored image {id} ({name}), which is shared with you"),
            false,
        ),
        // The first release's flag and the deprecation since: the image's state after either.
        _ => {
            let deprecation = &after.deprecation;
            let (kind, what) = match deprecation.state {
                DeprecationState::Active => return Vec::new(),
                DeprecationState::Deprecated => (
                    "image_deprecated",
                    "is deprecated; it stays usable but is hidden from lists",
                ),
                DeprecationState::Obsolete => {
                    ("image_obsolete", "is obsolete and can no longer be used")
                }
            };
            let instead = deprecation
                .replacement
                .map_or(String::new(), |r| format!("; use its replacement {r}"));
            (
                kind,
                format!("image {id} ({name}) of {owner} {what}{instead}"),
                after.class != ImageClass::Private,
            )
        }
    };
    let notice = |tenant: Option<TenantId>| Notice {
        tenant,
        kind,
        image_id: id,
        message: message.clone(),
        position,
    };
    if to_everyone {
        return vec![notice(None)];
    }
    after
        .members
        .keys()
        .cloned()
        .map(Some)
        .map(notice)
        .collect()
}

/// The notifications an event sends, to one tenant each (or to all, `tenant: None`).
fn feed_items(
    members_before: Option<&[TenantId]>,
    after: &Image,
    event: &Event,
    position: u64,
) -> Vec<Notice> {
    let id = after.id;
    let name = &after.name;
    let notice = |tenant: Option<&TenantId>, kind: &'static str, message: String| Notice {
        tenant: tenant.cloned(),
        kind,
        image_id: id,
        message,
        position,
    };
    // The same message to every recipient: rendered once.
    let to_each = |tenants: &[TenantId], kind: &'static str, message: &str| -> Vec<Notice> {
        tenants
            .iter()
            .map(|t| notice(Some(t), kind, message.to_owned()))
            .collect()
    };
    // Rendered only for the events that notify: most events notify no one.
    let owner = || {
        after
            .owner
            .tenant()
            .map_or("the platform".to_owned(), |t| format!("tenant {t}"))
    };
    match event {
        Event::ImageShared { tenants, .. } => to_each(
            tenants,
            "share_offered",
            &format!(
                "{} shared image {id} ({name}) with you; accept it to use it",
                owner()
            ),
        ),
        Event::ImageUnshared { tenants, .. } => to_each(
            tenants,
            "share_revoked",
            &format!("{} stopped sharing image {id} ({name}) with you", owner()),
        ),
        Event::ImageDeleted { .. } => match members_before {
            Some(members) if !members.is_empty() => to_each(
                members,
                "shared_image_deleted",
                &format!(
                    "{} deleted image {id} ({name}), which was shared with you",
                    owner()
                ),
            ),
            _ => Vec::new(),
        },
        Event::ImageRecycled { .. }
        | Event::ImageRestored { .. }
        | Event::ImageDeprecated { .. }
        | Event::DeprecationSet { .. } => lifecycle_items(after, event, &owner(), position),
        Event::CopyFinished {
            status: CopyStatus::Failed { reason },
            copy_image_id,
            ..
        } => after
            .owner
            .tenant()
            .map(|t| {
                vec![notice(
                    Some(t),
                    "copy_failed",
                    format!("the copy {copy_image_id} of image {id} ({name}) failed: {reason}"),
                )]
            })
            .unwrap_or_default(),
        Event::BuildFailedBecause { reason, .. } => after
            .owner
            .tenant()
            .map(|t| {
                vec![notice(
                    Some(t),
                    "build_failed",
                    format!("image {id} ({name}) could not be built: {reason}"),
                )]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
