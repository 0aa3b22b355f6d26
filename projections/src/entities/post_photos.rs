//! The `post_photos` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One photo attached to a post, in display order (`idx`), with its storage key and content hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "post_photos")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub post_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i64,
    pub photo_key: String,
    pub content_type: String,
    pub sha256: String,
    pub size: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
