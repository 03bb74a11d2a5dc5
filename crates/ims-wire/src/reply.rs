//! The reply to every command: `{"ok":true,...}` or `{"ok":false,"error":{...}}`.

use serde::{Deserialize, Serialize};

use crate::WireError;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The image's (or tenant's) version after the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The position of the command's last event; pass it as `min_position` to read your write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Share targets that were members already: nothing recorded for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub already_members: Vec<String>,
    /// Unshare targets that were not members: nothing to stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_members: Vec<String>,
    /// For copy-image: the id the copy will have in the target region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_image_id: Option<String>,
    /// True when this is the stored reply of an earlier command with the same command_id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl CommandReply {
    pub fn error(error: WireError) -> Self {
        Self {
            ok: false,
            error: Some(error),
            ..Self::default()
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply always serialises")
    }
}
