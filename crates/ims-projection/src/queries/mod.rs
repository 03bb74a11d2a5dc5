//! The queries of DESIGN.md section 5, answered from the catalog and usage read models. The same
//! functions serve NATS (`ims.v1.<region>.q.<tenant>.<query>`) and HTTP.

use ims_domain::{
    access, usable, Image, ImageId, ImageStatus, MemberStatus, OrganizationId, Purpose, RegionId,
    TenantId, Viewer,
};
use ims_wire::time::rfc3339;
use ims_wire::views::{
    image_type, Answer, FeedItem, ImageView, MemberView, Page, ShareCountView, UsableView,
    UsageItem, UsageView,
};
use ims_wire::{Query, WireError, WireErrorCode};

use crate::catalog::{
    member_status_from_byte, organization_key, tenant_key, tenant_organization_key, FeedRecord,
    OWNED,
};
use crate::store::{be_u64, image_key, Store};
use crate::usage::UsageEntry;
use crate::ProjectionError;

mod lifecycle;

use lifecycle::{latest, recycle_bin, unused_images};

/// The page size when a query gives none.
pub const PAGE_LIMIT_DEFAULT: usize = 25;
/// The largest page a query may ask for: big enough for scripts, small enough for one reply.
pub const PAGE_LIMIT_MAX: usize = 1000;

pub use ims_wire::QueryParams;

/// The read models a query reads, and where they are.
#[derive(Debug)]
pub struct Models<'a> {
    pub region: &'a RegionId,
    pub catalog: &'a Store,
    pub usage: &'a Store,
    pub position: u64,
    pub members_limit: usize,
    /// The most bytes an answer may take (the transport's limit): pages stop short of it and
    /// say where to continue.
    pub reply_bytes_max: usize,
}

/// A reply's bytes besides its items (`position`, `next_marker`, braces).
const PAGE_OVERHEAD_BYTES: usize = 256;

/// The bytes `item` adds to a JSON page (its JSON and a comma).
fn json_len(item: &impl serde::Serialize) -> usize {
    serde_json::to_vec(item).map_or(0, |bytes| bytes.len()) + 1
}

/// How many of `items` fit in `bytes_max` (at least one): the rest is for the next page.
fn fitting<T: serde::Serialize>(items: &[T], bytes_max: usize) -> usize {
    let mut bytes = PAGE_OVERHEAD_BYTES;
    for (index, item) in items.iter().enumerate() {
        bytes += json_len(item);
        if index > 0 && bytes > bytes_max {
            return index;
        }
    }
    items.len()
}

fn invalid(message: String) -> WireError {
    WireError::new(WireErrorCode::InvalidArgument, message)
}

fn internal(error: ProjectionError) -> WireError {
    WireError::new(
        WireErrorCode::Internal,
        format!("reading the read model failed: {error}"),
    )
}

fn one_of(field: &str, value: &str, accepted: &[&str]) -> Result<(), WireError> {
    if accepted.contains(&value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {value:?} is not known; expected one of {}",
            accepted.join(", ")
        )))
    }
}

fn limit(params: &QueryParams) -> Result<usize, WireError> {
    match params.limit.unwrap_or(PAGE_LIMIT_DEFAULT) {
        0 => Err(invalid(format!(
            "limit 0 returns nothing; expected 1 to {PAGE_LIMIT_MAX}"
        ))),
        n if n > PAGE_LIMIT_MAX => Err(invalid(format!(
            "limit {n} is too large; expected 1 to {PAGE_LIMIT_MAX}"
        ))),
        n => Ok(n),
    }
}

fn image_id_param(params: &QueryParams) -> Result<ImageId, WireError> {
    let raw = params
        .image_id
        .as_deref()
        .ok_or_else(|| invalid("image_id is missing; name the image (a UUID)".to_owned()))?;
    ImageId::parse(raw).map_err(WireError::from)
}

fn load_image(store: &Store, id: &ImageId) -> Result<Option<Image>, WireError> {
    match store.get(&image_key(id)).map_err(internal)? {
        None => Ok(None),
        Some(bytes) => ims_log::decode(&bytes, || format!("image {id}"))
            .map(Some)
            .map_err(|e| internal(e.into())),
    }
}

fn id_from_key_suffix(key: &[u8]) -> ImageId {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&key[key.len() - 16..]);
    ImageId::from_bytes(bytes)
}

/// The `marker` parameter: the image id a page starts after.
fn marker(params: &QueryParams) -> Result<Option<ImageId>, WireError> {
    params
        .marker
        .as_deref()
        .map(ImageId::parse)
        .transpose()
        .map_err(WireError::from)
}

/// The first key of an id-ordered index under `prefix` that comes after `marker`.
fn start_after(prefix: &[u8], marker: Option<&ImageId>) -> Vec<u8> {
    let mut start = prefix.to_vec();
    if let Some(marker) = marker {
        start.extend_from_slice(marker.as_bytes());
        start.push(0); // just after the marker's own key
    }
    start
}

/// A page of image views as a scan fills it: up to `limit` views within `bytes_max` bytes, and
/// the marker of the next page once one more image matches.
struct ImagePage {
    items: Vec<ImageView>,
    limit: usize,
    bytes: usize,
    bytes_max: usize,
    next_marker: Option<String>,
}

impl ImagePage {
    fn new(limit: usize, bytes_max: usize) -> Self {
        Self {
            items: Vec::with_capacity(limit.min(1000)),
            limit,
            bytes: PAGE_OVERHEAD_BYTES,
            bytes_max,
            next_marker: None,
        }
    }

    /// Adds the view of `image`; `false` once the page is full, when the scan should stop.
    fn add(&mut self, image: &Image, tenant: &TenantId) -> bool {
        let view = ImageView::new(image, Some(tenant));
        let bytes = json_len(&view);
        let full = self.items.len() == self.limit
            || (!self.items.is_empty() && self.bytes + bytes > self.bytes_max);
        if full {
            self.next_marker = self.items.last().map(|view| view.id.clone());
            return false;
        }
        self.bytes += bytes;
        self.items.push(view);
        true
    }

    fn answer(self, position: u64) -> Answer {
        Answer::Images(Page {
            items: self.items,
            next_marker: self.next_marker,
            position,
        })
    }
}

/// Image ids and values of an id-ordered index under `prefix`, strictly after `marker`.
fn entries_after<'a>(
    store: &'a Store,
    prefix: &'a [u8],
    marker: Option<&ImageId>,
) -> impl Iterator<Item = Result<(ImageId, Vec<u8>), WireError>> + 'a {
    store
        .scan_from(prefix, start_after(prefix, marker))
        .map(|item| {
            item.map(|(key, value)| (id_from_key_suffix(&key), value))
                .map_err(internal)
        })
}

/// Several id-ordered indexes read as one, in id order; an id in more than one is read once,
/// with the value of the first index that holds it.
fn merged<'a, I>(
    sources: Vec<I>,
) -> impl Iterator<Item = Result<(ImageId, Vec<u8>), WireError>> + 'a
where
    I: Iterator<Item = Result<(ImageId, Vec<u8>), WireError>> + 'a,
{
    let mut sources: Vec<std::iter::Peekable<I>> =
        sources.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        // An error first; else the smallest id, taken from every source that holds it.
        let mut smallest: Option<(usize, ImageId)> = None;
        for (index, source) in sources.iter_mut().enumerate() {
            match source.peek() {
                Some(Err(_)) => return source.next(),
                Some(Ok((id, _))) if smallest.is_none_or(|(_, low)| *id < low) => {
                    smallest = Some((index, *id));
                }
                _ => {}
            }
        }
        let (first, id) = smallest?;
        let taken = sources[first].next();
        for source in &mut sources {
            if matches!(source.peek(), Some(Ok((other, _))) if *other == id) {
                source.next();
            }
        }
        taken
    })
}

/// The organization `tenant` belongs to, as the catalog recorded it.
fn organization_of(store: &Store, tenant: &TenantId) -> Result<Option<OrganizationId>, WireError> {
    let Some(bytes) = store
        .get(&tenant_organization_key(tenant))
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(&bytes);
    OrganizationId::parse(&name).map(Some).map_err(|e| {
        WireError::new(
            WireErrorCode::Internal,
            format!(
                "the catalog's organization of tenant {tenant}: {}",
                e.message
            ),
        )
    })
}

/// Answers `query` for `tenant`.
pub fn answer(
    models: &Models,
    tenant: &TenantId,
    query: Query,
    params: &QueryParams,
) -> Result<Answer, WireError> {
    // Only the queries that decide what the tenant may see read its organization.
    let sees_through_organization = matches!(
        query,
        Query::VisibleImages
            | Query::SharedWithMe
            | Query::Image
            | Query::Members
            | Query::Usable
            | Query::Latest
    );
    let organization = if sees_through_organization {
        organization_of(models.catalog, tenant)?
    } else {
        None
    };
    let viewer = Viewer {
        tenant,
        organization: organization.as_ref(),
    };
    match query {
        Query::VisibleImages => visible_images(models, viewer, params),
        Query::SharedWithMe => shared_with_me(models, viewer, params),
        Query::Image => {
            let id = image_id_param(params)?;
            let image = visible_image(models, viewer, &id)?;
            Ok(Answer::Image(Box::new(ImageView::new(
                &image,
                Some(tenant),
            ))))
        }
        Query::Members => {
            let id = image_id_param(params)?;
            let image = visible_image(models, viewer, &id)?;
            if !image.is_owned_by(tenant) {
                return Err(WireError::new(
                    WireErrorCode::Forbidden,
                    format!(
                        "tenant {tenant} does not own image {id}; only its owner sees its members"
                    ),
                ));
            }
            let items: Vec<MemberView> = image
                .members
                .iter()
                .map(|(t, s)| MemberView::new(t, *s))
                .chain(image.organizations.iter().map(MemberView::organization))
                .collect();
            Ok(Answer::Members(Page {
                items,
                next_marker: None,
                position: models.position,
            }))
        }
        Query::ShareCounts => share_counts(models, tenant),
        Query::Usable => {
            let id = image_id_param(params)?;
            let purpose_name = params.purpose.as_deref().unwrap_or("create_ecs");
            let purpose = match purpose_name {
                "create_ecs" => Purpose::CreateEcs,
                "change_os" => Purpose::ChangeOs,
                "create_evs" => Purpose::CreateEvs,
                other => {
                    return Err(invalid(format!(
                    "purpose {other:?} is not known; expected create_ecs, change_os or create_evs"
                )))
                }
            };
            // An image the tenant may not see answers exactly as one that does not exist.
            let image = visible_image(models, viewer, &id)?;
            let answer = usable(models.region, viewer, id, Some(&image), purpose);
            Ok(Answer::Usable(UsableView::new(
                id.to_string(),
                purpose_name,
                &answer,
            )))
        }
        Query::Feed => feed(models, tenant, params),
        Query::Usage => usage(models, tenant, params),
        Query::UnusedImages => unused_images(models, tenant, params),
        Query::RecycleBin => recycle_bin(models, tenant, params),
        Query::Latest => latest(models, viewer, params),
    }
}

/// The image if the viewer may see it: its own, public, Marketplace, shared with it in any
/// status or with its organization.
fn visible_image(models: &Models, viewer: Viewer, id: &ImageId) -> Result<Image, WireError> {
    let tenant = viewer.tenant;
    let image = load_image(models.catalog, id)?;
    match image {
        Some(image)
            if image.status != ImageStatus::Deleted
                && (access(&image, viewer).is_some()
                    || (image.status != ImageStatus::Recycled
                        && image.members.contains_key(tenant))) =>
        {
            Ok(image)
        }
        _ => Err(WireError::new(
            WireErrorCode::NotFound,
            format!(
                "image {id} does not exist in region {region} or tenant {tenant} may not see it: an \
                 image of another region must be copied to {region} first (copy-image), and one of \
                 another tenant must be shared with you",
                region = models.region
            ),
        )),
    }
}

fn visible_images(
    models: &Models,
    viewer: Viewer,
    params: &QueryParams,
) -> Result<Answer, WireError> {
    let tenant = viewer.tenant;
    let limit = limit(params)?;
    if let Some(t) = &params.image_type {
        one_of("type", t, &["public", "private", "shared", "marketplace"])?;
    }
    if let Some(s) = &params.status {
        one_of("status", s, &["queued", "saving", "active", "killed"])?;
    }
    let marker = marker(params)?;
    let tag = params
        .tag
        .as_deref()
        .map(|t| t.split_once('=').map_or((t, None), |(k, v)| (k, Some(v))));
    let name = params.name.as_ref().map(|n| n.to_lowercase());
    let own_prefix = tenant_key(b'v', tenant, &[]);
    let organization_prefix = viewer
        .organization
        .map(|organization| organization_key(b'O', organization, &[]));
    let mut sources = vec![
        entries_after(models.catalog, &own_prefix, marker.as_ref()),
        entries_after(models.catalog, b"g", marker.as_ref()),
    ];
    if let Some(prefix) = &organization_prefix {
        sources.push(entries_after(models.catalog, prefix, marker.as_ref()));
    }
    let mut page = ImagePage::new(limit, models.reply_bytes_max);
    for entry in merged(sources) {
        let (id, _) = entry?;
        let Some(image) = load_image(models.catalog, &id)? else {
            continue;
        };
        let view_type = image_type(&image, Some(tenant));
        let keep = (!image.is_deprecated() || params.include_deprecated == Some(true))
            && params
                .family
                .as_deref()
                .is_none_or(|family| image.family.as_deref() == Some(family))
            && params.image_type.as_deref().is_none_or(|t| t == view_type)
            && params
                .status
                .as_deref()
                .is_none_or(|s| s == image.status.as_str())
            && params.platform.as_deref().is_none_or(|p| {
                image
                    .os
                    .as_ref()
                    .is_some_and(|os| os.platform.eq_ignore_ascii_case(p))
            })
            && tag.is_none_or(|(k, v)| {
                image
                    .tags
                    .get(k)
                    .is_some_and(|value| v.is_none_or(|v| v == value))
            })
            && name
                .as_deref()
                .is_none_or(|n| image.name.to_lowercase().contains(n));
        if keep && !page.add(&image, tenant) {
            break;
        }
    }
    Ok(page.answer(models.position))
}

fn shared_with_me(
    models: &Models,
    viewer: Viewer,
    params: &QueryParams,
) -> Result<Answer, WireError> {
    let tenant = viewer.tenant;
    if let Some(s) = &params.status {
        one_of("status", s, &["pending", "accepted", "rejected"])?;
    }
    let limit = limit(params)?;
    let marker = marker(params)?;
    let prefix = tenant_key(b'm', tenant, &[]);
    let organization_prefix = viewer
        .organization
        .map(|organization| organization_key(b'O', organization, &[]));
    let mut sources = vec![entries_after(models.catalog, &prefix, marker.as_ref())];
    if let Some(prefix) = &organization_prefix {
        sources.push(entries_after(models.catalog, prefix, marker.as_ref()));
    }
    let mut page = ImagePage::new(limit, models.reply_bytes_max);
    for entry in merged(sources) {
        let (id, value) = entry?;
        let status: MemberStatus = member_status_from_byte(value[0]);
        if params
            .status
            .as_deref()
            .is_some_and(|s| s != status.as_str())
        {
            continue;
        }
        let Some(image) = load_image(models.catalog, &id)? else {
            continue;
        };
        if !page.add(&image, tenant) {
            break;
        }
    }
    Ok(page.answer(models.position))
}

fn share_counts(models: &Models, tenant: &TenantId) -> Result<Answer, WireError> {
    let prefix = tenant_key(b'v', tenant, &[]);
    let mut items = Vec::new();
    for entry in entries_after(models.catalog, &prefix, None) {
        let (id, value) = entry?;
        if value != OWNED {
            continue; // an accepted share: the tenant may use it but does not own it
        }
        let Some(image) = load_image(models.catalog, &id)? else {
            continue;
        };
        let count = |status| image.members.values().filter(|s| **s == status).count() as u32;
        items.push(ShareCountView {
            image_id: id.to_string(),
            name: image.name.clone(),
            pending: count(MemberStatus::Pending),
            accepted: count(MemberStatus::Accepted),
            rejected: count(MemberStatus::Rejected),
            organizations: image.organizations.len() as u32,
            total: (image.members.len() + image.organizations.len()) as u32,
            limit: models.members_limit as u32,
        });
    }
    Ok(Answer::ShareCounts(Page {
        items,
        next_marker: None,
        position: models.position,
    }))
}

fn feed(models: &Models, tenant: &TenantId, params: &QueryParams) -> Result<Answer, WireError> {
    let limit = limit(params)?;
    let after = params.after.unwrap_or(0);
    let read = |prefix: Vec<u8>| -> Result<Vec<FeedItem>, WireError> {
        let mut start = prefix.clone();
        start.extend_from_slice(&(after + 1).to_be_bytes());
        let mut items = Vec::new();
        for entry in models.catalog.scan_from(&prefix, start).take(limit) {
            let (key, value) = entry.map_err(internal)?;
            let position = be_u64(&key[prefix.len()..]);
            let record: FeedRecord =
                ims_log::decode(&value, || "feed item".into()).map_err(|e| internal(e.into()))?;
            items.push(FeedItem {
                position,
                at: rfc3339(record.at_ms),
                kind: record.kind,
                image_id: record.image_id.to_string(),
                message: record.message,
            });
        }
        Ok(items)
    };
    let mut items = read(tenant_key(b'f', tenant, &[]))?;
    items.extend(read(b"F".to_vec())?);
    items.sort_by_key(|item| item.position);
    items.truncate(limit);
    let full = items.len() == limit;
    let fit = fitting(&items, models.reply_bytes_max);
    let next_marker = (full || fit < items.len())
        .then(|| {
            items
                .get(fit.wrapping_sub(1))
                .map(|i| i.position.to_string())
        })
        .flatten();
    items.truncate(fit);
    Ok(Answer::Feed(Page {
        items,
        next_marker,
        position: models.position,
    }))
}

fn usage(models: &Models, tenant: &TenantId, params: &QueryParams) -> Result<Answer, WireError> {
    let limit = limit(params)?;
    let prefix = tenant_key(b'u', tenant, &[]);
    let mut start = prefix.clone();
    start.extend_from_slice(&(params.after.unwrap_or(0) + 1).to_be_bytes());
    let mut items = Vec::new();
    // Each total is at most u64::MAX (decide refuses more), and u128 holds any sum of a page.
    let mut totals = std::collections::BTreeMap::<String, u128>::new();
    for entry in models.usage.scan_from(&prefix, start).take(limit) {
        let (key, value) = entry.map_err(internal)?;
        let entry: UsageEntry =
            ims_log::decode(&value, || "usage entry".into()).map_err(|e| internal(e.into()))?;
        if let Some(currency) = &entry.currency {
            *totals.entry(currency.clone()).or_default() += u128::from(entry.charge_minor);
        }
        items.push(UsageItem {
            position: be_u64(&key[prefix.len()..]),
            image_id: entry.image_id.to_string(),
            hours: entry.hours,
            charge_minor: entry.charge_minor,
            currency: entry.currency,
            at: rfc3339(entry.at_ms),
        });
    }
    Ok(Answer::Usage(UsageView {
        items,
        totals_minor: totals,
        position: models.position,
    }))
}
