//! The `post_photo_social` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// The state of cross-posting one photo, added after its post was created,
/// to one provider: as `post_social` is for the post itself.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "post_photo_social")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub post_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub photo_key: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    pub status: String,
    pub external_id: Option<String>,
    pub url: Option<String>,
    pub reason: Option<String>,
    pub attempts: i64,
    pub updated_at_us: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
