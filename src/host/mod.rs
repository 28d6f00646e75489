//! Host discovery: read a sysfs tree into a [`Host`] snapshot.

mod model;
mod models;
mod read;

pub use model::*;
pub use models::model_name;
pub use read::{DiscoverError, discover, is_bdf};
