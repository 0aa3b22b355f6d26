//! The `posts` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A post by a member about a store; deleted posts are kept with `deleted` set.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "posts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub post_id: String,
    pub author_id: String,
    pub store_id: String,
    pub body: String,
    pub deleted: bool,
    pub created_at_us: i64,
    pub position: i64,
    pub photo_count: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
