//! Queries (DESIGN.md section 5): which ones exist, and their parameters, shared by the query
//! endpoints, HTTP, imsctl, the copy saga and the tests.

use serde::{Deserialize, Serialize};

use crate::{WireError, WireErrorCode};

/// A query, named as in `ims.v1.<region>.q.<tenant>.<query>` and the HTTP routes.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Query {
    VisibleImages,
    SharedWithMe,
    Image,
    Members,
    ShareCounts,
    Usable,
    Feed,
    Usage,
    UnusedImages,
    RecycleBin,
    Latest,
}

impl Query {
    /// Every query, in the order of DESIGN.md.
    pub const ALL: &'static [Query] = <Query as strum::VariantArray>::VARIANTS;

    /// The query's name in subjects and routes.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The query named `name`, or `unknown_command` naming the queries there are.
    pub fn parse(name: &str) -> Result<Query, WireError> {
        name.parse().map_err(|_| {
            let known: Vec<&str> = Self::ALL.iter().map(|q| q.as_str()).collect();
            WireError::new(
                WireErrorCode::UnknownCommand,
                format!("unknown query {name:?}; queries are {}", known.join(", ")),
            )
        })
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters of every query; each query reads the ones it needs, and unknown ones are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `key` or `key=value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A case-insensitive part of the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_deprecated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Feed and usage: only entries after this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// `unused-images`: not launched in this many days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// `latest`: the image family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Read your writes: answer only once the model has reached this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// `ims.v1.<region>.audit.who-could-use`: which tenants could use an image at a position or a
/// moment (neither: now).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhoCouldUseRequest {
    pub image_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Unix milliseconds: as of every event recorded at or before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// `ims.v1.<region>.audit.as-of`: what `query` answered `tenant` at a position or a moment
/// (neither: now), answered by a process that holds the region's read models, from their
/// snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfRequest {
    pub tenant: String,
    /// A query's name, as [`Query::parse`] reads it.
    pub query: String,
    #[serde(default)]
    pub params: QueryParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Unix milliseconds: as of every event recorded at or before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_parses_from_its_name_and_others_are_named_in_the_refusal() {
        for query in Query::ALL {
            assert_eq!(Query::parse(query.as_str()).unwrap(), *query);
        }
        assert_eq!(Query::VisibleImages.as_str(), "visible-images");
        assert_eq!(Query::ALL.len(), 11);
        assert_eq!(Query::RecycleBin.as_str(), "recycle-bin");
        let unknown = Query::parse("all-images").unwrap_err();
        assert_eq!(unknown.code, WireErrorCode::UnknownCommand);
        assert!(unknown.message.contains("all-images") && unknown.message.contains("usable"));
    }
}
