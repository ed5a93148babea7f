//! What the webhook and the reconciler both read: OLM's objects projected from watches
//! ([`olm`], [`caches`]), the links of CSVs to catalogs remembered past OLM's records
//! ([`links`]), the index built from them ([`index`]), the small TTL map behind every
//! memory of past answers ([`ttl`]), one lookup or copy per key at a time ([`single_flight`]), and
//! the Events both publish ([`events`]).

pub mod caches;
pub(crate) mod events;
pub mod index;
pub mod links;
pub mod olm;
pub mod selector;
pub(crate) mod single_flight;
pub(crate) mod ttl;
