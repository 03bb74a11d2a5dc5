//! The limits of sharing and of image metadata, with the seed's values as defaults.

/// Limits that the rules enforce. Defaults are the seed's and DESIGN.md's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharingPolicy {
    /// Members per image, counting pending, accepted and rejected (the seed: 128 tenants).
    pub members_per_image_max: usize,
    /// Private images a tenant may own in a region unless the operator sets another quota.
    pub quota_default: u32,
    pub tags_max: usize,
    pub tag_key_chars_max: usize,
    pub tag_value_chars_max: usize,
    pub name_chars_max: usize,
    pub description_chars_max: usize,
    pub min_disk_gb_max: u32,
    /// The highest quota an operator may set; guards against typos like an extra zero digit.
    pub quota_max: u32,
    /// Days a deleted image stays in the recycle bin unless the operator sets the tenant's own.
    pub retention_days_default: u32,
    /// The length of a retention day: a day, which tests shorten to seconds.
    pub retention_day_ms: u64,
}

impl Default for SharingPolicy {
    fn default() -> Self {
        Self {
            members_per_image_max: 128,
            quota_default: 100,
            tags_max: 10,
            tag_key_chars_max: 36,
            tag_value_chars_max: 43,
            name_chars_max: 128,
            description_chars_max: 1024,
            min_disk_gb_max: 1024,
            quota_max: 1_000_000,
            retention_days_default: 7,
            retention_day_ms: 86_400_000,
        }
    }
}
