//! Profile reads answered from bytes encoded straight from the store. A full profile holds
//! about 2,100 tags of five strings each; building a `pb::Profile` for it copied every string
//! twice (out of the store, into the message) and freed them all again. Here the protobuf bytes
//! of the `Profile` are written from the stored groups, borrowed, and sent as they are: the
//! client sees the same `Profile` message, byte for byte what prost encodes for
//! `convert::profile_to_pb` of the same view (the tests hold the two to that).
//!
//! Owns: that encoding (of one profile, of a `BatchGetProfiles` answer of many, and of an
//! export's `ProfileChunk`), the codec that sends it, and the routing that serves
//! `GetProfile`, `GetProfileByIdNumber`, `GetPersonByRecord`, `BatchGetProfiles` and
//! `ExportProfiles` through it while every other method of `ProfileService` goes to the
//! generated server.

use super::access::{self, Shown};
use super::convert::TimeFormatter;
use super::{BoxStream, ProfileApi};
use crate::callers::ReaderGrant;
use crate::catalog::Catalog;
use crate::engine::{EngineError, StoredProfileView};
use crate::masking::mask_value;
use crate::model::EpochMillis;
use crate::pb;
use prost::encoding::{encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

/// The protobuf bytes of one `M`, written straight from the store and sent as they are.
pub struct Encoded<M>(Vec<u8>, PhantomData<fn() -> M>);

/// One `pb::Profile`.
pub type EncodedProfile = Encoded<pb::Profile>;
/// One `pb::BatchGetProfilesResponse`, written a profile at a time.
pub type EncodedBatch = Encoded<pb::BatchGetProfilesResponse>;
/// One `pb::ProfileChunk` of an export, written a profile at a time.
pub type EncodedChunk = Encoded<pb::ProfileChunk>;

impl<M: Message + Default> Encoded<M> {
    fn new(bytes: Vec<u8>) -> Encoded<M> {
        Encoded(bytes, PhantomData)
    }

    /// The message the bytes encode.
    pub fn decode(&self) -> Result<M, Status> {
        M::decode(self.0.as_slice()).map_err(|error| {
            let message = std::any::type_name::<M>().rsplit("::").next().unwrap_or("message");
            Status::internal(format!("an encoded {message} does not decode: {error}"))
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends `profile` as field `field`.
    fn put_profile(&mut self, field: u32, profile: &EncodedProfile) {
        put_key(&mut self.0, field, WireType::LengthDelimited);
        put_raw_varint(&mut self.0, profile.0.len() as u64);
        self.0.extend_from_slice(&profile.0);
    }
}

impl<M> AsRef<[u8]> for Encoded<M> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<M> Default for Encoded<M> {
    fn default() -> Self {
        Encoded(Vec::new(), PhantomData)
    }
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Encoded(self.0.clone(), PhantomData)
    }
}

impl<M> PartialEq for Encoded<M> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<M> Eq for Encoded<M> {}

impl<M> std::fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded<{}>({} bytes)", std::any::type_name::<M>(), self.0.len())
    }
}

impl EncodedBatch {
    /// Appends a found profile. Every profile comes before the first `not_found`, the order
    /// of the message's fields.
    pub fn push_profile(&mut self, profile: &EncodedProfile) {
        self.put_profile(1, profile);
    }

    /// Appends the ids no person holds, after the profiles.
    pub fn finish(mut self, not_found: &[String]) -> EncodedBatch {
        for person_id in not_found {
            put_key(&mut self.0, 2, WireType::LengthDelimited);
            put_raw_varint(&mut self.0, person_id.len() as u64);
            self.0.extend_from_slice(person_id.as_bytes());
        }
        self
    }
}

impl EncodedChunk {
    pub fn push_profile(&mut self, profile: &EncodedProfile) {
        self.put_profile(1, profile);
    }

    /// Ends the chunk with the export's start sequence (the first chunk; 0 for the others),
    /// after the profiles, the order of the message's fields.
    pub fn finish(mut self, change_sequence: u64) -> EncodedChunk {
        if change_sequence != 0 {
            put_key(&mut self.0, 2, WireType::Varint);
            put_raw_varint(&mut self.0, change_sequence);
        }
        self
    }
}

/// The profile as `grant` may see it, encoded as a `pb::Profile`, and the tags it shares (for
/// the audit entry), in tag order. `compact`: each value names its record by its place in
/// `records` (`TagValue.record`), which carry the time, instead of repeating source, record id
/// and time (see `convert::expand_compact_profile`).
pub fn profile<'v>(
    grant: &ReaderGrant,
    catalog: &Catalog,
    view: &'v StoredProfileView,
    compact: bool,
) -> Result<(EncodedProfile, Vec<&'v str>), EngineError> {
    let entries = view.tags.entries()?;
    // Each value as the grant shows it: the stored bytes as they are, or read as text and
    // masked (`None`: not shown).
    let mut values: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(entries.len());
    for entry in &entries {
        values.push(match access::visibility(grant, catalog, entry.tag) {
            Shown::Hidden => None,
            Shown::AsIs => Some(Cow::Borrowed(entry.value)),
            Shown::Masked(value_type) => Some(Cow::Owned(mask_value(value_type, entry.value_text()?).into_bytes())),
        });
    }
    // Compact: the record of each value (1 + its place in `records`; 0 for one not among
    // them, which keeps its own fields), and each record's time, the first of its values'.
    let mut record_of = vec![0u32; entries.len()];
    let mut record_times: Vec<Option<EpochMillis>> = vec![None; if compact { view.records.len() } else { 0 }];
    if compact {
        let places: FxHashMap<(&[u8], &[u8]), u32> = (1..)
            .zip(&view.records)
            .map(|(place, record)| ((record.source.as_str().as_bytes(), record.record_id.as_bytes()), place))
            .collect();
        for ((entry, value), record) in entries.iter().zip(&values).zip(&mut record_of) {
            if value.is_none() {
                continue;
            }
            if let Some(&place) = places.get(&(entry.source, entry.record_id)) {
                *record = place;
                record_times[place as usize - 1].get_or_insert(entry.observed_at);
            }
        }
    }
    let mut times = TimeFormatter::default();
    let mut buf = Vec::with_capacity(64 + entries.len() * if compact { 40 } else { 96 });
    put_str(&mut buf, 1, view.person_id.as_str().as_bytes());
    let mut shared = Vec::with_capacity(entries.len());
    for ((entry, value), &record) in entries.iter().zip(&values).zip(&record_of) {
        let Some(value) = value else {
            continue;
        };
        let record_time = record.checked_sub(1).map(|at| record_times[at as usize]);
        if record_time == Some(Some(entry.observed_at)) {
            put_message(&mut buf, 2, &[entry.tag.as_bytes(), value, b"", b"", b""], record);
        } else {
            let observed_at = times.format(entry.observed_at);
            // A time of its own that formats to nothing (out of range) would read as the
            // record's: such a value keeps its own fields.
            if record == 0 || observed_at.is_empty() {
                let fields = [
                    entry.tag.as_bytes(),
                    value,
                    entry.source,
                    entry.record_id,
                    observed_at.as_bytes(),
                ];
                put_message(&mut buf, 2, &fields, 0);
            } else {
                put_message(
                    &mut buf,
                    2,
                    &[entry.tag.as_bytes(), value, b"", b"", observed_at.as_bytes()],
                    record,
                );
            }
        }
        shared.push(entry.tag);
    }
    let n_records = u32::try_from(view.records.len()).unwrap_or(u32::MAX);
    put_varint(&mut buf, 3, u64::from(n_records));
    put_varint(&mut buf, 4, view.version);
    for (place, record) in view.records.iter().enumerate() {
        let observed_at = match record_times.get(place).copied().flatten() {
            Some(time) => times.format(time),
            None => "",
        };
        put_message(
            &mut buf,
            5,
            &[
                record.source.as_str().as_bytes(),
                record.record_id.as_bytes(),
                observed_at.as_bytes(),
            ],
            0,
        );
    }
    if let Some(asked) = &view.redirected_from {
        put_str(&mut buf, 6, asked.as_str().as_bytes());
    }
    Ok((EncodedProfile::new(buf), shared))
}

fn str_len(field: u32, value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(field) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

/// A varint, written in place when it takes one byte (field keys below 16 and most lengths
/// here do): a full profile writes about ten of them a tag.
#[inline]
fn put_raw_varint(buf: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        encode_varint(value, buf);
    }
}

#[inline]
fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: WireType) {
    put_raw_varint(buf, (u64::from(field) << 3) | wire_type as u64);
}

/// A string field (its bytes); an empty one is left out, as proto3 does.
#[inline]
fn put_str(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    if value.is_empty() {
        return;
    }
    put_key(buf, field, WireType::LengthDelimited);
    put_raw_varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

/// A varint field; zero is left out, as proto3 does.
fn put_varint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(buf, field, WireType::Varint);
        put_raw_varint(buf, value);
    }
}

/// An element of a repeated message field whose fields are strings, numbered from 1, and
/// then, unless zero, one varint (numbered after them).
fn put_message(buf: &mut Vec<u8>, field: u32, strings: &[&[u8]], last: u32) {
    let last_number = strings.len() as u32 + 1;
    let last_len = if last == 0 {
        0
    } else {
        key_len(last_number) + encoded_len_varint(u64::from(last))
    };
    let len: usize = (1..)
        .zip(strings)
        .map(|(number, value)| str_len(number, value))
        .sum::<usize>()
        + last_len;
    put_key(buf, field, WireType::LengthDelimited);
    put_raw_varint(buf, len as u64);
    for (number, value) in (1..).zip(strings) {
        put_str(buf, number, value);
    }
    put_varint(buf, last_number, u64::from(last));
}

/// Sends an answer already encoded (`Resp`: an `Encoded` message) as it is and
/// decodes the request with prost.
pub struct EncodedCodec<Req, Resp>(PhantomData<(Req, Resp)>);

impl<Req, Resp> Default for EncodedCodec<Req, Resp> {
    fn default() -> Self {
        EncodedCodec(PhantomData)
    }
}

pub struct EncodedEncoder<Resp>(PhantomData<Resp>);

impl<Resp: AsRef<[u8]>> Encoder for EncodedEncoder<Resp> {
    type Item = Resp;
    type Error = Status;

    fn encode(&mut self, item: Resp, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(item.as_ref());
        Ok(())
    }
}

impl<Req, Resp> Codec for EncodedCodec<Req, Resp>
where
    Req: Message + Default + Send + 'static,
    Resp: AsRef<[u8]> + Send + 'static,
{
    type Encode = Resp;
    type Decode = Req;
    type Encoder = EncodedEncoder<Resp>;
    type Decoder = RequestDecoder<Req>;

    fn encoder(&mut self) -> EncodedEncoder<Resp> {
        EncodedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> RequestDecoder<Req> {
        RequestDecoder(PhantomData)
    }
}

pub struct RequestDecoder<Req>(PhantomData<Req>);

impl<Req: Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("cannot decode the request: {error}")))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Generated = pb::profile_service_server::ProfileServiceServer<ProfileApi>;

const GET_PROFILE: &str = "/popmaster.v1.ProfileService/GetProfile";
const GET_PROFILE_BY_ID_NUMBER: &str = "/popmaster.v1.ProfileService/GetProfileByIdNumber";
const BATCH_GET_PROFILES: &str = "/popmaster.v1.ProfileService/BatchGetProfiles";
const GET_PERSON_BY_RECORD: &str = "/popmaster.v1.ProfileService/GetPersonByRecord";
const EXPORT_PROFILES: &str = "/popmaster.v1.ProfileService/ExportProfiles";

/// `ProfileService` as the server mounts it: the profile reads (by id, one or a batch, by ID
/// number, by record) answered with encoded profiles, every other method by the generated
/// server.
#[derive(Clone)]
pub struct ProfileRoutes {
    generated: Generated,
    api: ProfileApi,
    message_bytes_max: usize,
}

impl ProfileRoutes {
    pub fn new(api: ProfileApi, message_bytes_max: usize) -> Self {
        let generated = Generated::new(api.clone())
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(message_bytes_max)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        ProfileRoutes {
            generated,
            api,
            message_bytes_max,
        }
    }

    /// Answers `request` with `handler` through a codec that sends its encoded answer as it
    /// is, with the same message limits and compression as the generated server's.
    fn unary<Req, Resp>(
        &self,
        request: http::Request<tonic::body::Body>,
        handler: Handler<Req, Resp>,
    ) -> BoxFuture<Result<http::Response<tonic::body::Body>, Infallible>>
    where
        Req: Message + Default + Send + 'static,
        Resp: AsRef<[u8]> + Send + 'static,
    {
        let mut grpc = self.grpc::<Req, Resp>();
        let method = Method(self.api.clone(), handler);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }

    /// Answers `request` with the stream `handler` opens, each message sent as encoded.
    fn server_streaming<Req, Resp>(
        &self,
        request: http::Request<tonic::body::Body>,
        handler: StreamHandler<Req, Resp>,
    ) -> BoxFuture<Result<http::Response<tonic::body::Body>, Infallible>>
    where
        Req: Message + Default + Send + 'static,
        Resp: AsRef<[u8]> + Send + 'static,
    {
        let mut grpc = self.grpc::<Req, Resp>();
        let method = StreamMethod(self.api.clone(), handler);
        Box::pin(async move { Ok(grpc.server_streaming(method, request).await) })
    }

    /// A codec that sends encoded answers as they are, with the same message limits and
    /// compression as the generated server's.
    fn grpc<Req, Resp>(&self) -> Grpc<EncodedCodec<Req, Resp>>
    where
        Req: Message + Default + Send + 'static,
        Resp: AsRef<[u8]> + Send + 'static,
    {
        Grpc::new(EncodedCodec::<Req, Resp>::default())
            .max_decoding_message_size(self.message_bytes_max)
            .max_encoding_message_size(self.message_bytes_max)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
    }
}

impl NamedService for ProfileRoutes {
    const NAME: &'static str = <Generated as NamedService>::NAME;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for ProfileRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        match request.uri().path() {
            GET_PROFILE => self.unary(request, |api, request| {
                Box::pin(async move { api.get_profile_encoded(request).await })
            }),
            GET_PROFILE_BY_ID_NUMBER => self.unary(request, |api, request| {
                Box::pin(async move { api.get_profile_by_id_number_encoded(request).await })
            }),
            GET_PERSON_BY_RECORD => self.unary(request, |api, request| {
                Box::pin(async move { api.get_person_by_record_encoded(request).await })
            }),
            BATCH_GET_PROFILES => self.unary(request, |api, request| {
                Box::pin(async move { api.batch_get_profiles_encoded(request).await })
            }),
            EXPORT_PROFILES => self.server_streaming(request, |api, request| {
                Box::pin(async move { api.export_profiles_encoded(request).await })
            }),
            _ => self.generated.call(request),
        }
    }
}

/// One method served with an encoded answer.
type Handler<Req, Resp> = fn(ProfileApi, Request<Req>) -> BoxFuture<Result<Response<Resp>, Status>>;

struct Method<Req, Resp>(ProfileApi, Handler<Req, Resp>);

/// One method answered with a stream of encoded messages.
type StreamHandler<Req, Resp> = fn(ProfileApi, Request<Req>) -> BoxFuture<Result<Response<BoxStream<Resp>>, Status>>;

struct StreamMethod<Req, Resp>(ProfileApi, StreamHandler<Req, Resp>);

impl<Req, Resp: Send + 'static> ServerStreamingService<Req> for StreamMethod<Req, Resp> {
    type Response = Resp;
    type ResponseStream = BoxStream<Resp>;
    type Future = BoxFuture<Result<Response<BoxStream<Resp>>, Status>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.1)(self.0.clone(), request)
    }
}

impl<Req, Resp> UnaryService<Req> for Method<Req, Resp> {
    type Response = Resp;
    type Future = BoxFuture<Result<Response<Resp>, Status>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.1)(self.0.clone(), request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::convert::{expand_compact_profile, profile_to_pb};
    use crate::callers::Callers;
    use crate::model::{PersonId, RecordKey, SourceId, TagCode};
    use crate::store::layout::profile_group_of;
    use crate::store::{ProfileEntry, StoredProfile};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn restricted_grant(catalog: &Catalog) -> ReaderGrant {
        let hash = crate::callers::to_hex(&crate::callers::hash_token("t"));
        let text = format!(
            "[[caller]]\nid = \"portal\"\ntokens_sha256 = [\"{hash}\"]\n[caller.reader]\n\
             tags = [\"name\", \"id_number\", \"gender\", \"phone\", \"d07.*\"]\nsensitivity_max = \"L4\"\n"
        );
        let callers = Callers::parse(&text, catalog).expect("valid callers");
        let caller = callers.authenticate("t").expect("known token");
        caller.reader.clone().expect("a reader")
    }

    fn tag_code() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("name".to_string()),
            Just("id_number".to_string()),
            Just("phone".to_string()),
            Just("gender".to_string()),
            Just("address".to_string()),
            Just("d07.vehicle_plate".to_string()),
            Just("d12.not_in_the_catalog".to_string()),
            "[a-z]{1,8}",
        ]
    }

    fn entry() -> impl Strategy<Value = ProfileEntry> {
        (
            "\\PC{0,12}",
            prop_oneof![Just("D01"), Just("D07"), Just("D63")],
            "[0-9a-z-]{0,10}",
            prop_oneof![Just(0i64), 0i64..4_102_444_800_000, Just(i64::MAX), Just(-1i64)],
        )
            .prop_map(|(value, source, record_id, observed_at)| ProfileEntry {
                value,
                source: SourceId::parse(source).expect("source"),
                record_id,
                observed_at,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The bytes written from the store are exactly prost's encoding of the message the
        /// other reads build, for every grant, mask, redirection and record list.
        #[test]
        fn encoded_profiles_are_what_prost_encodes(
            tags in proptest::collection::btree_map(tag_code(), entry(), 0..24),
            mask_some in proptest::collection::vec(tag_code(), 0..3),
            records in proptest::collection::vec(("[0-9a-z]{0,6}", prop_oneof![Just("D01"), Just("D07")]), 0..5),
            version in prop_oneof![Just(0u64), 1u64..1_000],
            redirected in proptest::option::of("P[0-9]{4}"),
            restricted in any::<bool>(),
        ) {
            let catalog = Catalog::shipped();
            let grant = if restricted { restricted_grant(&catalog) } else { ReaderGrant::everything() };
            // Each tag in its own group, as the store keeps them.
            let mut by_group: BTreeMap<String, BTreeMap<TagCode, ProfileEntry>> = BTreeMap::new();
            for (tag, entry) in tags {
                let tag = TagCode::new(tag);
                by_group.entry(profile_group_of(&tag)).or_default().insert(tag, entry);
            }
            let groups: Vec<BTreeMap<TagCode, ProfileEntry>> = by_group.into_values().collect();
            let mask: Vec<TagCode> = mask_some.into_iter().map(TagCode::new).collect();
            let view = StoredProfileView {
                person_id: PersonId::new("P0001".to_string()),
                version,
                tags: StoredProfile::from_groups(&groups, &mask),
                records: records
                    .into_iter()
                    .map(|(record_id, source)| RecordKey {
                        source: SourceId::parse(source).expect("source"),
                        record_id,
                    })
                    .collect(),
                redirected_from: redirected.map(PersonId::new),
            };
            let (encoded, shared) = profile(&grant, &catalog, &view, false).expect("encodes");
            let shared: Vec<String> = shared.into_iter().map(String::from).collect();
            let expected = profile_to_pb(access::profile(&grant, &catalog, view.into_view().expect("decodes")));
            let expected_bytes = expected.encode_to_vec();
            prop_assert_eq!(encoded.as_bytes(), expected_bytes.as_slice());
            let expected_tags: Vec<String> = expected.tags.iter().map(|tag| tag.tag.clone()).collect();
            prop_assert_eq!(shared, expected_tags);
        }

        /// A batch answer is prost's encoding of the message of its profiles and unfound ids.
        #[test]
        fn encoded_batches_are_what_prost_encodes(
            persons in proptest::collection::vec(proptest::collection::btree_map(tag_code(), entry(), 0..6), 0..4),
            not_found in proptest::collection::vec("P[0-9]{0,200}", 0..3),
            compact in any::<bool>(),
        ) {
            let catalog = Catalog::shipped();
            let grant = ReaderGrant::everything();
            let mut batch = EncodedBatch::default();
            let mut expected = pb::BatchGetProfilesResponse::default();
            for (n, tags) in persons.into_iter().enumerate() {
                let mut by_group: BTreeMap<String, BTreeMap<TagCode, ProfileEntry>> = BTreeMap::new();
                for (tag, entry) in tags {
                    let tag = TagCode::new(tag);
                    by_group.entry(profile_group_of(&tag)).or_default().insert(tag, entry);
                }
                let groups: Vec<BTreeMap<TagCode, ProfileEntry>> = by_group.into_values().collect();
                let view = StoredProfileView {
                    person_id: PersonId::new(format!("P{n:04}")),
                    version: n as u64,
                    tags: StoredProfile::from_groups(&groups, &[]),
                    records: Vec::new(),
                    redirected_from: None,
                };
                let (profile, _) = profile(&grant, &catalog, &view, compact).expect("encodes");
                batch.push_profile(&profile);
                expected.profiles.push(profile.decode().expect("decodes"));
            }
            expected.not_found = not_found.clone();
            let batch = batch.finish(&not_found);
            let expected_bytes = expected.encode_to_vec();
            prop_assert_eq!(batch.as_ref(), expected_bytes.as_slice());
            prop_assert_eq!(batch.decode().expect("decodes"), expected);
        }

        /// An export's chunk is prost's encoding of the message of its profiles and the start
        /// sequence (set in the first chunk only).
        #[test]
        fn encoded_chunks_are_what_prost_encodes(
            n_profiles in 0usize..4,
            change_sequence in prop_oneof![Just(0u64), 1u64..200, Just(u64::MAX)],
            compact in any::<bool>(),
        ) {
            let catalog = Catalog::shipped();
            let grant = ReaderGrant::everything();
            let mut chunk = EncodedChunk::default();
            let mut expected = pb::ProfileChunk { change_sequence, ..pb::ProfileChunk::default() };
            for n in 0..n_profiles {
                let entry = ProfileEntry {
                    value: format!("值{n}"),
                    source: SourceId::parse("D07").expect("source"),
                    record_id: format!("r{n}"),
                    observed_at: 1_700_000_000_000 + n as i64,
                };
                let tag = TagCode::new("name");
                let view = StoredProfileView {
                    person_id: PersonId::new(format!("P{n:04}")),
                    version: n as u64 + 1,
                    tags: StoredProfile::from_groups(&[BTreeMap::from([(tag, entry)])], &[]),
                    records: Vec::new(),
                    redirected_from: None,
                };
                let (profile, _) = profile(&grant, &catalog, &view, compact).expect("encodes");
                chunk.push_profile(&profile);
                expected.profiles.push(profile.decode().expect("decodes"));
            }
            let chunk = chunk.finish(change_sequence);
            let expected_bytes = expected.encode_to_vec();
            prop_assert_eq!(chunk.as_ref(), expected_bytes.as_slice());
            prop_assert_eq!(chunk.decode().expect("decodes"), expected);
        }

        /// A compact profile is prost's encoding of its own message, and expands to exactly
        /// the full profile: the records the values name (in any order, some values of a
        /// record at another time than its first), and values naming a record not listed.
        #[test]
        fn compact_profiles_expand_to_the_full_profile(
            tags in proptest::collection::btree_map(tag_code(), (0usize..4, "\\PC{0,8}", prop_oneof![6 => Just(0i64), 2 => 1i64..9, 1 => Just(i64::MAX / 2)]), 0..24),
            unlisted in proptest::collection::vec(0usize..4, 0..2),
            order in Just(()).prop_perturb(|_, mut rng| rng.next_u64()),
            mask_some in proptest::collection::vec(tag_code(), 0..2),
            restricted in any::<bool>(),
        ) {
            let catalog = Catalog::shipped();
            let grant = if restricted { restricted_grant(&catalog) } else { ReaderGrant::everything() };
            let record_key = |n: usize| RecordKey {
                source: SourceId::parse(["D01", "D07", "D07", "D63"][n]).expect("source"),
                record_id: format!("r{n}"),
            };
            let mut by_group: BTreeMap<String, BTreeMap<TagCode, ProfileEntry>> = BTreeMap::new();
            for (tag, (record, value, shift)) in tags {
                let key = record_key(record);
                let tag = TagCode::new(tag);
                let entry = ProfileEntry {
                    value,
                    source: key.source,
                    record_id: key.record_id,
                    observed_at: 1_700_000_000_000 + 1_000 * record as i64 + shift,
                };
                by_group.entry(profile_group_of(&tag)).or_default().insert(tag, entry);
            }
            let groups: Vec<BTreeMap<TagCode, ProfileEntry>> = by_group.into_values().collect();
            let mut records: Vec<RecordKey> = (0..4).filter(|n| !unlisted.contains(n)).map(record_key).collect();
            let rotate = (order % 4) as usize % records.len().max(1);
            records.rotate_left(rotate);
            let view = StoredProfileView {
                person_id: PersonId::new("P0001".to_string()),
                version: 3,
                tags: StoredProfile::from_groups(&groups, &mask_some.into_iter().map(TagCode::new).collect::<Vec<_>>()),
                records,
                redirected_from: None,
            };
            let (full, _) = profile(&grant, &catalog, &view, false).expect("encodes");
            let (compact, shared) = profile(&grant, &catalog, &view, true).expect("encodes");
            let decoded = compact.decode().expect("decodes");
            prop_assert_eq!(decoded.encode_to_vec(), compact.as_bytes().to_vec());
            prop_assert!(compact.as_bytes().len() <= full.as_bytes().len());
            let shared: Vec<String> = shared.into_iter().map(String::from).collect();
            prop_assert_eq!(shared, decoded.tags.iter().map(|tag| tag.tag.clone()).collect::<Vec<_>>());
            prop_assert_eq!(expand_compact_profile(decoded), full.decode().expect("decodes"));
        }
    }
}
