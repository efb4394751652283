//! Synthetic population: a deterministic, seeded generator of invented Chinese residents and
//! the messy interchange records departments send about them, each with its true person.
//! For tests, benches and demos only: every person is made up, never real data.
//! Owns the generation only; never touches the store, the index or the network.
//!
//! Records stream person by person (a person's records are adjacent, in observed_at order),
//! so memory stays constant however many persons are asked for. Everything is drawn from
//! `StdRng` seeded per person group, so a seed gives the same records on every platform.

use crate::catalog::{Catalog, IdentityRole, ValueType};
use crate::cleanse::id_number::check_digit;
use crate::interchange::{InterchangeRecord, TagText};
use chrono::{Datelike, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};

/// What to generate. Rates outside 0..=1 are clamped; a mean below 1 counts as 1.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub n_persons: usize,
    /// Mean records per person (each person appears in 1.. sources); default 3.0.
    pub records_per_person_mean: f64,
    /// Probability a record carries no ID number at all (department never recorded one);
    /// default 0.15.
    pub missing_id_rate: f64,
    /// Probability of each kind of corruption per value; default 0.1.
    pub error_rate: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            n_persons: 1_000,
            records_per_person_mean: 3.0,
            missing_id_rate: 0.15,
            error_rate: 0.1,
        }
    }
}

/// The records of one resident known to every department: one record per source, each carrying
/// every tag that source owns plus the identity tags, so the profile holds every tag of the
/// catalog (about 2,100). For benchmarks of full-profile reads and writes; `variant` changes
/// the department values (and the observation time) for re-sends. Record ids are
/// `full-<person_idx>` in every source.
pub fn full_profile_records(catalog: &Catalog, person_idx: u32, variant: u32) -> Vec<InterchangeRecord> {
    let id_number = |n: u32| -> String {
        let first17 = format!("3301061980{:02}{:02}{:03}", 1 + n % 12, 1 + n / 12 % 28, n % 1000);
        let digits: &[u8; 17] = first17.as_bytes().try_into().expect("17 digits");
        format!("{first17}{}", char::from(check_digit(digits)))
    };
    // A value its tag's type accepts, so cleansing keeps every tag.
    let value_for = |value_type: ValueType, label: &str| -> String {
        match value_type {
            ValueType::Integer => format!("{}", person_idx * 10 + variant % 10),
            ValueType::Decimal => format!("{person_idx}.{}", variant % 10),
            ValueType::Boolean => if variant.is_multiple_of(2) { "true" } else { "false" }.to_string(),
            ValueType::Date => format!(
                "20{:02}-0{}-1{}",
                10 + variant % 10,
                1 + person_idx % 9,
                person_idx % 10
            ),
            ValueType::Phone => format!("139{:04}{:04}", person_idx % 10_000, variant % 10_000),
            ValueType::Gender => "女".to_string(),
            ValueType::IdNumber => id_number(person_idx + 5_000),
            ValueType::Address => "浙江省杭州市西湖区文三路1号".to_string(),
            ValueType::Name => "王芳".to_string(),
            _ => format!("{label}-{person_idx}-{variant}"),
        }
    };
    let observed_at = chrono::DateTime::from_timestamp_millis(1_600_000_000_000 + i64::from(variant))
        .map(|time| time.to_rfc3339())
        .expect("a valid time");
    catalog
        .sources()
        .map(|source| {
            let mut tags: BTreeMap<String, Option<TagText>> = catalog
                .tags()
                .iter()
                .filter(|tag| tag.owner_source == source.code)
                .map(|tag| {
                    (
                        tag.code.clone(),
                        Some(TagText::Text(value_for(tag.value_type, &tag.label))),
                    )
                })
                .collect();
            let identity = [
                ("id_number", id_number(person_idx)),
                ("name", "欧阳文静".to_string()),
                ("phone", format!("138{person_idx:08}")),
                ("address", "浙江省杭州市西湖区文三路1号".to_string()),
                ("hukou_address", "浙江省杭州市西湖区文三路1号".to_string()),
                ("ethnicity", "汉族".to_string()),
                ("gender", "女".to_string()),
                ("birth_date", "1980-01-01".to_string()),
                ("other_id", format!("E{person_idx:08}")),
            ];
            for (tag, value) in identity {
                tags.insert(tag.to_string(), Some(TagText::Text(value)));
            }
            InterchangeRecord {
                source: source.code.clone(),
                record_id: format!("full-{person_idx}"),
                observed_at: Some(observed_at.clone()),
                tags,
            }
        })
        .collect()
}

/// One generated record and the person it truly belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRecord {
    pub record: InterchangeRecord,
    /// 0-based index of the generated person.
    pub true_person: u64,
}

impl SynthRecord {
    /// The record as the engine takes it after admission, for benches and tests that feed the
    /// engine directly. Generated records are always admissible.
    pub fn to_raw_record(&self) -> crate::model::RawRecord {
        self.record.to_raw_record()
    }
}

/// Surnames by relative frequency (roughly per 10,000 people), space-separated.
#[rustfmt::skip]
const SURNAMES_BY_WEIGHT: &[(u32, &str)] = &[
    (720, "王 李"), (690, "张"), (540, "刘"), (460, "陈"), (320, "杨"), (230, "黄"), (200, "赵 吴"),
    (190, "周"), (130, "徐"), (120, "孙"), (110, "朱 郭"), (100, "胡 高"), (90, "林 何 马"),
    (70, "罗"), (60, "梁"), (50, "宋 郑 谢"), (40, "韩 唐 冯 于 董"),
    (30, "萧 程 曹 袁 邓 许 傅 沈 曾 彭 吕 苏 卢 蒋 蔡"),
    (20, "贾 丁 魏 薛 叶 阎 余 潘 杜 戴 夏 钟 汪 田 任 姜 范 方 石 姚 谭 廖 邹 熊 金 陆 郝"),
    (10, "孔 白 崔 康 毛 邱 秦 江 史 顾 侯 邵 孟 龙 万 段 雷 钱 汤 尹 黎 易 常 武 乔 贺 赖 龚 文"),
    (3, "欧阳"), (1, "司马 诸葛 上官 东方 皇甫 慕容"),
];
/// Given-name characters, women's then men's (indexed by `usize::from(male)`).
const GIVEN_CHARS: [&str; 2] = [
    "芳娜敏静丽艳娟霞秀英玲桂兰燕萍红婷雪琳晶颖慧莉倩梅洁琴云玉凤华欣怡佳悦雨思涵梦",
    "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林欢阳建国志文东海峰晨毅亮成博",
];
/// The very common full names that make "same name, different person" everyday work.
const COMMON_NAMES: [&str; 2] = [
    "王芳 李娜 张敏 李静 王静 张丽 王丽 张静 王敏 李敏 王艳 李娟 张艳 李艳 王娟 刘敏 李霞 李丽 \
     王秀英 李秀英 张秀英 王秀兰 刘芳 张燕 刘艳 王燕 陈静 李玲 李桂英 王丹",
    "张伟 王伟 李伟 刘伟 李强 王磊 刘洋 王勇 李军 张勇 李杰 张杰 张磊 王强 王军 张涛 王涛 王超 \
     李明 李勇 刘杰 张军 王杰 张强 王刚 王平 王辉 刘勇 王鹏 陈伟 杨伟 张华",
];
/// Uyghur names, written given name · father's name.
const UYGHUR_NAMES: [&str; 2] = [
    "古丽米拉 热依拉 努尔古丽 迪丽努尔 阿依古丽 帕提古丽 再努尔 阿依努尔 米热古丽",
    "买买提 艾力 阿卜杜拉 吐尔逊 艾买提 依明 热合曼 阿布都 肉孜 卡德尔 玉素甫 亚森",
];
/// Simplified characters and, at the same position, the traditional form some systems still send.
const SIMPLIFIED_CHARS: &str =
    "张伟陈刘黄赵吴杨华丽国红马孙郑冯邓许韩罗萧叶钱卢谢苏龙军强涛鹏飞兰艳凤静刚辉东杰云宁欢颖龚阳欧顾";
const TRADITIONAL_CHARS: &str =
    "張偉陳劉黃趙吳楊華麗國紅馬孫鄭馮鄧許韓羅蕭葉錢盧謝蘇龍軍強濤鵬飛蘭艷鳳靜剛輝東傑雲寧歡穎龔陽歐顧";
/// Zhejiang districts: GB/T 2260 code, city, district.
#[rustfmt::skip]
const REGIONS: &[(&str, &str, &str)] = &[
    ("330102", "杭州市", "上城区"), ("330105", "杭州市", "拱墅区"), ("330106", "杭州市", "西湖区"),
    ("330108", "杭州市", "滨江区"), ("330109", "杭州市", "萧山区"), ("330110", "杭州市", "余杭区"),
    ("330203", "宁波市", "海曙区"), ("330205", "宁波市", "江北区"), ("330212", "宁波市", "鄞州区"),
    ("330302", "温州市", "鹿城区"), ("330304", "温州市", "瓯海区"), ("330402", "嘉兴市", "南湖区"),
    ("330502", "湖州市", "吴兴区"), ("330602", "绍兴市", "越城区"), ("330702", "金华市", "婺城区"),
    ("330782", "金华市", "义乌市"), ("330802", "衢州市", "柯城区"), ("330902", "舟山市", "定海区"),
    ("331002", "台州市", "椒江区"), ("331102", "丽水市", "莲都区"),
];
const STREETS: &str = "文三路 文二路 教工路 学院路 延安路 解放路 中山路 人民路 建设路 凤起路 体育场路 \
                       环城北路 天目山路 莫干山路 江南大道 滨盛路 市心路 文一西路 中山北路 百丈路 天一街 \
                       五马街 车站大道 中环北路 人民大道 胜利路 八一北街 府山街 新华路 江滨路 工人路 和平路";
/// Ethnicity, its GB 3304 code, and a relative weight.
#[rustfmt::skip]
const ETHNICITIES: &[(&str, &str, u32)] = &[
    ("汉族", "01", 900), ("蒙古族", "02", 5), ("回族", "03", 15), ("藏族", "04", 5),
    ("维吾尔族", "05", 15), ("苗族", "06", 10), ("壮族", "08", 15), ("满族", "11", 10),
    ("土家族", "15", 10), ("畲族", "22", 15),
];
const UYGHUR: usize = 4;
const TEXT_PHRASES: &str = "正常 已办结 在册 退休 个体经营 无 待审核 已注销 在职 已核实 \
                            暂缓 已迁出 有效 首次申领 城镇职工 灵活就业 已备案 本地户籍 外来务工 低保对象";

/// The canonical identity tags, in the order records fill them.
#[rustfmt::skip]
const CANONICAL_TAGS: [&str; 9] =
    ["name", "id_number", "birth_date", "gender", "phone", "address", "hukou_address", "ethnicity", "other_id"];
/// Public security registers these for everyone: its records always carry them.
const PUBLIC_SECURITY: &str = "D01";
#[rustfmt::skip]
const PUBLIC_SECURITY_ALWAYS: [&str; 6] =
    ["name", "id_number", "birth_date", "gender", "ethnicity", "hukou_address"];

const BIRTH_FIRST: (i32, u32, u32) = (1930, 1, 1);
const BIRTH_LAST: (i32, u32, u32) = (2023, 12, 31);
const OBSERVED_FIRST: (i32, u32, u32) = (2015, 1, 1);
const OBSERVED_LAST: (i32, u32, u32) = (2025, 12, 31);
/// Persons born on or after this day are under 16 in the observation window: no phone.
const CHILD_BORN_FROM: (i32, u32, u32) = (2009, 1, 1);
/// ID sequence numbers (000..999) are split in quarters of 125 pairs (one odd number for a
/// man, one even for a woman) so that derived persons never reuse a number: ordinary persons,
/// twins of an ordinary person, namesakes of one, and strangers in department tags.
const SEQUENCE_PAIRS_PER_KIND: u64 = 125;
const KIND_ORDINARY: u64 = 0;
const KIND_TWIN: u64 = 1;
const KIND_NAMESAKE: u64 = 2;
const KIND_STRANGER: u64 = 3;
const TWIN_RATE: f64 = 0.02;
const NAMESAKE_RATE: f64 = 0.02;
const MOVER_RATE: f64 = 0.25;
const COMMON_NAME_RATE: f64 = 0.1;
const SECONDS_PER_DAY: i64 = 86_400;

/// Lazily generates records person by person (memory O(1) in n_persons, so 1,000,000 records
/// stream without holding them). Deterministic for a seed.
pub struct Generator {
    config: SynthConfig,
    tables: Tables,
    sources: Vec<SourceEntry>,
    /// Canonical tags the catalog knows, from `CANONICAL_TAGS`, with their identity role.
    canonical_tags: Vec<(&'static str, IdentityRole)>,
    public_security: Option<usize>,
    source_weights: Vec<(usize, u32)>,
    /// Sources whose records may lack an ID number: not public security, not requiring one.
    source_weights_without_id: Vec<(usize, u32)>,
    slots: SlotPermutation,
    next_person: u64,
    next_record: u64,
    pending: VecDeque<SynthRecord>,
}

struct Tables {
    surnames: Vec<(&'static str, u32)>,
    ethnicities: Vec<(usize, u32)>,
    given_chars: [Vec<char>; 2],
    common_names: [Vec<&'static str>; 2],
    uyghur_names: [Vec<&'static str>; 2],
    streets: Vec<&'static str>,
    text_phrases: Vec<&'static str>,
    simplified_to_traditional: BTreeMap<char, char>,
}

struct SourceEntry {
    code: String,
    /// Fill probability of each of `Generator::canonical_tags`.
    canonical_fill: Vec<f64>,
    department_tags: Vec<(String, ValueType, IdentityRole)>,
}

#[derive(Clone)]
struct Address {
    region: usize,
    street: &'static str,
    number: u32,
    /// Building, unit, room.
    unit: Option<(u32, u32, u32)>,
}

#[derive(Clone)]
struct Person {
    index: u64,
    /// The father's name for Uyghur names.
    family: String,
    given: String,
    uyghur_name: bool,
    male: bool,
    birth: NaiveDate,
    ethnicity: usize,
    region: usize,
    /// The ID number's sequence pair within its quarter; see `SEQUENCE_PAIRS_PER_KIND`.
    sequence_pair: u64,
    id_number: String,
    /// Empty for children; a second entry is the phone the person changed to at `moves_at`.
    phones: Vec<String>,
    /// A second entry is where the person moved at `moves_at`.
    addresses: Vec<Address>,
    hukou: Address,
    /// Seconds into the observation window from which records see a mover's new values.
    moves_at: i64,
    /// The seconds in which the person's records are observed: from a month after birth.
    window: (i64, i64),
    other_id: String,
}

impl Generator {
    pub fn new(config: SynthConfig, catalog: &Catalog) -> Self {
        let config = SynthConfig {
            records_per_person_mean: config.records_per_person_mean.max(1.0),
            missing_id_rate: config.missing_id_rate.clamp(0.0, 1.0),
            error_rate: config.error_rate.clamp(0.0, 1.0),
            ..config
        };
        let canonical_tags: Vec<(&'static str, IdentityRole)> = CANONICAL_TAGS
            .into_iter()
            .filter_map(|code| {
                let def = catalog.tag(code).filter(|def| def.owner_source.is_empty())?;
                Some((code, def.identity_role))
            })
            .collect();
        let mut generator = Generator {
            slots: SlotPermutation::new(config.seed),
            config,
            tables: Tables::new(),
            sources: Vec::new(),
            canonical_tags,
            public_security: None,
            source_weights: Vec::new(),
            source_weights_without_id: Vec::new(),
            next_person: 0,
            next_record: 0,
            pending: VecDeque::new(),
        };
        for (source_idx, source) in catalog.sources().enumerate() {
            let is_public_security = source.code == PUBLIC_SECURITY;
            let requires = |tag: &str| source.required_tags.iter().any(|required| required == tag);
            let canonical_fill = (generator.canonical_tags.iter().enumerate())
                .map(|(tag_idx, &(tag, _))| match tag {
                    _ if requires(tag) => 1.0,
                    _ if is_public_security && PUBLIC_SECURITY_ALWAYS.contains(&tag) => 1.0,
                    // Whether a record carries its ID number is decided by missing_id_rate.
                    "id_number" => 1.0,
                    // Each department fills the other identity tags to its own habit.
                    _ => [0.3, 0.55, 0.8][(mix(source_idx as u64 * 16 + tag_idx as u64) % 3) as usize],
                })
                .collect();
            let department_tags = (catalog.tags().iter())
                .filter(|tag| tag.owner_source == source.code)
                .map(|tag| (tag.code.clone(), tag.value_type, tag.identity_role))
                .collect();
            let weight = if is_public_security { 8 } else { 1 };
            generator.source_weights.push((source_idx, weight));
            if is_public_security {
                generator.public_security = Some(source_idx);
            } else if !requires("id_number") {
                generator.source_weights_without_id.push((source_idx, weight));
            }
            let code = source.code.clone();
            generator.sources.push(SourceEntry {
                code,
                canonical_fill,
                department_tags,
            });
        }
        generator
    }

    /// Generates the next one or two persons (a single, a pair of twins, or a namesake pair)
    /// and queues their records.
    fn generate_next_group(&mut self) {
        let first = self.next_person;
        let mut rng = StdRng::seed_from_u64(mix(self.config.seed ^ mix(first)));
        let base = self.ordinary_person(&mut rng, first);
        let has_room_for_two = self.config.n_persons as u64 - first >= 2;
        let roll: f64 = rng.gen();
        let second = match () {
            _ if has_room_for_two && roll < TWIN_RATE => Some(self.twin_of(&mut rng, &base)),
            _ if has_room_for_two && roll < TWIN_RATE + NAMESAKE_RATE => Some(self.namesake_of(&mut rng, &base)),
            _ => None,
        };
        self.next_person += 1 + u64::from(second.is_some());
        for person in std::iter::once(base).chain(second) {
            self.queue_records(&mut rng, &person);
        }
    }

    fn ordinary_person(&self, rng: &mut StdRng, index: u64) -> Person {
        let (birth, region, sequence_pair) = self.slots.slot(index);
        let male = rng.gen_bool(0.5);
        let ethnicity = pick_weighted(rng, &self.tables.ethnicities);
        let uyghur_name = ethnicity == UYGHUR;
        let (family, given) = if uyghur_name {
            let father = pick_from(rng, &self.tables.uyghur_names[1]);
            (father.to_string(), self.given_name(rng, true, male))
        } else if rng.gen_bool(COMMON_NAME_RATE) {
            let full = pick_from(rng, &self.tables.common_names[usize::from(male)]);
            let split = full.chars().next().expect("names are not empty").len_utf8();
            (full[..split].to_string(), full[split..].to_string())
        } else {
            let family = pick_weighted(rng, &self.tables.surnames);
            (family.to_string(), self.given_name(rng, false, male))
        };
        let born = i64::from(birth.num_days_from_ce() - day_number(OBSERVED_FIRST));
        let window_start = ((born + 30) * SECONDS_PER_DAY).max(0);
        let window_end = i64::from(day_number(OBSERVED_LAST) + 1 - day_number(OBSERVED_FIRST)) * SECONDS_PER_DAY;
        let mover = rng.gen_bool(MOVER_RATE);
        let mut phones = Vec::new();
        if birth < date_of(day_number(CHILD_BORN_FROM)) {
            phones.push(random_phone(rng));
            if mover && rng.gen_bool(0.6) {
                phones.push(random_phone(rng));
            }
        }
        let mut addresses = vec![self.random_address(rng, Some(region))];
        if mover && (phones.len() < 2 || rng.gen_bool(0.5)) {
            let same_district = rng.gen_bool(0.7);
            addresses.push(self.random_address(rng, same_district.then_some(region)));
        }
        let hukou = match rng.gen_range(0..10u32) {
            0..=5 => addresses[0].clone(),
            6..=8 => self.random_address(rng, Some(region)),
            _ => self.random_address(rng, None),
        };
        let moves_at = rng.gen_range(window_start..window_end);
        let mut person = Person {
            index,
            family,
            given,
            uyghur_name,
            male,
            birth,
            ethnicity,
            region,
            sequence_pair,
            id_number: String::new(),
            phones,
            addresses,
            hukou,
            moves_at,
            window: (window_start, window_end),
            other_id: random_other_id(rng),
        };
        person.assign_id_number(KIND_ORDINARY);
        person
    }

    /// A twin: same family name, birth date, address and hukou; own given name, gender, phone
    /// and an ID number from the twins' quarter of sequence numbers.
    fn twin_of(&self, rng: &mut StdRng, sibling: &Person) -> Person {
        let mut twin = sibling.clone();
        twin.index += 1;
        twin.male = rng.gen_bool(0.5);
        while twin.given == sibling.given {
            twin.given = self.given_name(rng, twin.uyghur_name, twin.male);
        }
        twin.phones = another_phone(rng, &sibling.phones);
        twin.other_id = random_other_id(rng);
        twin.assign_id_number(KIND_TWIN);
        twin
    }

    /// A different person with the same name, gender and birth date, born and living elsewhere.
    fn namesake_of(&self, rng: &mut StdRng, original: &Person) -> Person {
        let mut other = original.clone();
        other.index += 1;
        // The region is a function of the original's so that namesake ID numbers stay unique.
        other.region = (original.region + 1) % REGIONS.len();
        other.phones = another_phone(rng, &original.phones);
        other.addresses = vec![self.random_address(rng, Some(other.region))];
        other.hukou = self.random_address(rng, Some(other.region));
        other.other_id = random_other_id(rng);
        other.assign_id_number(KIND_NAMESAKE);
        other
    }

    /// A Uyghur given name, or one or two Han given-name characters.
    fn given_name(&self, rng: &mut StdRng, uyghur: bool, male: bool) -> String {
        if uyghur {
            return pick_from(rng, &self.tables.uyghur_names[usize::from(male)]).to_string();
        }
        let given_chars = &self.tables.given_chars[usize::from(male)];
        let n_chars = if rng.gen_bool(0.35) { 1 } else { 2 };
        (0..n_chars).map(|_| pick_from(rng, given_chars)).collect()
    }

    /// An address in `region`, or in any region.
    fn random_address(&self, rng: &mut StdRng, region: Option<usize>) -> Address {
        Address {
            region: region.unwrap_or_else(|| pick(rng, REGIONS.len())),
            street: pick_from(rng, &self.tables.streets),
            number: rng.gen_range(1..=999u32),
            unit: rng.gen_bool(0.7).then(|| {
                let room = rng.gen_range(1..=33) * 100 + rng.gen_range(1..=6);
                (rng.gen_range(1..=30), rng.gen_range(1..=6), room)
            }),
        }
    }

    fn queue_records(&mut self, rng: &mut StdRng, person: &Person) {
        let n_records = 1 + poisson(rng, self.config.records_per_person_mean - 1.0);
        let (window_start, window_end) = person.window;
        let mut times: Vec<i64> = (0..n_records)
            .map(|_| rng.gen_range(window_start..window_end))
            .collect();
        times.sort_unstable();
        for (record_idx, observed) in times.into_iter().enumerate() {
            let carries_id = self.source_weights_without_id.is_empty() || !rng.gen_bool(self.config.missing_id_rate);
            let source_idx = match self.public_security {
                _ if !carries_id => pick_weighted(rng, &self.source_weights_without_id),
                // Nearly every resident is registered with public security.
                Some(public_security) if record_idx == 0 && rng.gen_bool(0.5) => public_security,
                _ => pick_weighted(rng, &self.source_weights),
            };
            let record = self.record(rng, person, source_idx, observed, carries_id);
            self.pending.push_back(SynthRecord {
                record,
                true_person: person.index,
            });
        }
    }

    fn record(
        &mut self,
        rng: &mut StdRng,
        person: &Person,
        source_idx: usize,
        observed: i64,
        carries_id: bool,
    ) -> InterchangeRecord {
        let source = &self.sources[source_idx];
        let later = observed >= person.moves_at;
        let mut tags = BTreeMap::new();
        for (&(tag, role), &fill) in self.canonical_tags.iter().zip(&source.canonical_fill) {
            let filled = rng.gen_bool(fill) && (role != IdentityRole::IdNumber || carries_id);
            let value = if filled {
                self.identity_value(rng, person, role, later)
            } else {
                None
            };
            let value = match value {
                Some(value) => Some(value),
                // ETL exports leave a missing value out, send null, or send an empty string.
                None if rng.gen_bool(0.6) => continue,
                None => rng.gen_bool(0.5).then(|| TagText::from("")),
            };
            tags.insert(tag.to_string(), value);
        }
        let mut candidates: Vec<&(String, ValueType, IdentityRole)> = (source.department_tags.iter())
            .filter(|(_, _, role)| carries_id || *role != IdentityRole::IdNumber)
            .collect();
        let n_department = rng.gen_range(3..=8u32) as usize;
        for taken in 0..candidates.len().min(n_department) {
            let chosen = taken + pick(rng, candidates.len() - taken);
            candidates.swap(taken, chosen);
            let (code, value_type, role) = candidates[taken];
            // A value the person does not have (a child's phone) goes out as null.
            let value = match role {
                IdentityRole::None => Some(self.department_value(rng, *value_type)),
                role => self.identity_value(rng, person, *role, later),
            };
            tags.insert(code.clone(), value);
        }
        let record_id = format!("{:x}-{}", self.config.seed, self.next_record);
        self.next_record += 1;
        let observed_at = Some(render_observed_at(observed));
        InterchangeRecord {
            source: source.code.clone(),
            record_id,
            observed_at,
            tags,
        }
    }

    /// The person's value for an identity role, as a department sends it; `None` when the
    /// person has none (a child's phone). `later` picks a mover's new phone and address.
    fn identity_value(&self, rng: &mut StdRng, person: &Person, role: IdentityRole, later: bool) -> Option<TagText> {
        let error_rate = self.config.error_rate;
        let current = |n_values: usize| if later { n_values.saturating_sub(1) } else { 0 };
        let text = match role {
            IdentityRole::Name => self.render_name(rng, person),
            IdentityRole::IdNumber => render_id_number(rng, person, error_rate),
            IdentityRole::BirthDate => render_date(rng, person.birth, error_rate),
            IdentityRole::Gender => return Some(render_gender(rng, person.male, error_rate)),
            IdentityRole::Phone => {
                let phone = person.phones.get(current(person.phones.len()))?;
                render_phone(rng, phone, error_rate)
            }
            IdentityRole::Address => {
                let address = &person.addresses[current(person.addresses.len())];
                render_address(rng, address, error_rate)
            }
            IdentityRole::HukouAddress => render_address(rng, &person.hukou, error_rate),
            IdentityRole::Ethnicity => render_ethnicity(rng, person.ethnicity, error_rate),
            IdentityRole::SecondaryId | IdentityRole::None => person.other_id.clone(),
        };
        Some(TagText::Text(text))
    }

    /// A plausible value for a department tag that does not describe the person's identity:
    /// a guardian's name, a permit's date, an amount. ETL exports send numbers and booleans
    /// unquoted about as often as quoted.
    fn department_value(&self, rng: &mut StdRng, value_type: ValueType) -> TagText {
        let error_rate = self.config.error_rate;
        let text = match value_type {
            ValueType::Name => {
                let (family, male) = (pick_weighted(rng, &self.tables.surnames), rng.gen_bool(0.5));
                format!("{family}{}", self.given_name(rng, false, male))
            }
            ValueType::IdNumber => {
                let (birth, region, pair) = self.slots.slot(rng.gen_range(0..self.slots.n_slots));
                id_number(region, birth, sequence(KIND_STRANGER, pair, rng.gen_bool(0.5)))
            }
            ValueType::Date => {
                let date = date_of(day_number((2000, 1, 1)) + rng.gen_range(0..9_400));
                render_date(rng, date, error_rate)
            }
            ValueType::Gender => {
                let male = rng.gen_bool(0.5);
                return render_gender(rng, male, error_rate);
            }
            ValueType::Phone => {
                let phone = random_phone(rng);
                render_phone(rng, &phone, error_rate)
            }
            ValueType::Address => {
                let address = self.random_address(rng, None);
                render_address(rng, &address, error_rate)
            }
            ValueType::Integer if rng.gen_bool(0.5) => return TagText::Number(rng.gen_range(0..2_000u32).into()),
            ValueType::Integer => rng.gen_range(0..2_000u32).to_string(),
            ValueType::Decimal => {
                let amount = f64::from(rng.gen_range(0..10_000_000u32)) / 100.0;
                match serde_json::Number::from_f64(amount) {
                    Some(number) if rng.gen_bool(0.5) => return TagText::Number(number),
                    _ => format!("{amount:.2}"),
                }
            }
            ValueType::Boolean => {
                let flag = rng.gen_bool(0.5);
                match rng.gen_range(0..3u32) {
                    0 => return TagText::Bool(flag),
                    1 => flag.to_string(),
                    _ => if flag { "是" } else { "否" }.to_string(),
                }
            }
            ValueType::Code => format!("{}{:02}", random_letter(rng), rng.gen_range(0..100u32)),
            ValueType::Identifier => {
                let (first, second) = (random_letter(rng), random_letter(rng));
                format!("{first}{second}{:010}", rng.gen_range(0..10_000_000_000u64))
            }
            ValueType::Text => pick_from(rng, &self.tables.text_phrases).to_string(),
        };
        TagText::Text(text)
    }

    /// The person's name as a department wrote it: sometimes in traditional characters, with
    /// stray spaces, or another middle dot.
    fn render_name(&self, rng: &mut StdRng, person: &Person) -> String {
        let error_rate = self.config.error_rate;
        let mut name = if person.uyghur_name {
            let messy_dots = [".", "•", "・", "．", " "];
            let messy = rng.gen_bool(error_rate);
            let dot = if messy { pick_from(rng, &messy_dots) } else { "·" };
            format!("{}{dot}{}", person.given, person.family)
        } else {
            let gap = if rng.gen_bool(error_rate) { " " } else { "" };
            format!("{}{gap}{}", person.family, person.given)
        };
        if rng.gen_bool(error_rate) {
            let traditional = |c| *self.tables.simplified_to_traditional.get(&c).unwrap_or(&c);
            name = name.chars().map(traditional).collect();
        }
        if rng.gen_bool(error_rate) {
            let (before, after) = pick_from(rng, &[(" ", ""), ("", " "), ("", "\u{3000}")]);
            name = format!("{before}{name}{after}");
        }
        name
    }
}

impl Iterator for Generator {
    type Item = SynthRecord;

    fn next(&mut self) -> Option<SynthRecord> {
        while self.pending.is_empty() && self.next_person < self.config.n_persons as u64 {
            self.generate_next_group();
        }
        self.pending.pop_front()
    }
}

impl Tables {
    fn new() -> Self {
        let words = |lists: [&'static str; 2]| lists.map(|list| list.split_whitespace().collect());
        let surnames = SURNAMES_BY_WEIGHT
            .iter()
            .flat_map(|&(weight, names)| names.split_whitespace().map(move |name| (name, weight)));
        Tables {
            surnames: surnames.collect(),
            ethnicities: (ETHNICITIES.iter().enumerate())
                .map(|(idx, &(_, _, weight))| (idx, weight))
                .collect(),
            given_chars: GIVEN_CHARS.map(|chars| chars.chars().collect()),
            common_names: words(COMMON_NAMES),
            uyghur_names: words(UYGHUR_NAMES),
            streets: STREETS.split_whitespace().collect(),
            text_phrases: TEXT_PHRASES.split_whitespace().collect(),
            simplified_to_traditional: SIMPLIFIED_CHARS.chars().zip(TRADITIONAL_CHARS.chars()).collect(),
        }
    }
}

/// A bijection from person indices to ID slots (birth day, region, sequence pair), so that
/// ordinary persons never share an ID number without remembering the numbers handed out:
/// a 4-round Feistel network over the next power of four, cycle-walked into range.
struct SlotPermutation {
    n_days: u64,
    n_slots: u64,
    half_bits: u32,
    round_keys: [u64; 4],
}

impl SlotPermutation {
    fn new(seed: u64) -> Self {
        let n_days = (day_number(BIRTH_LAST) - day_number(BIRTH_FIRST) + 1) as u64;
        let n_slots = n_days * REGIONS.len() as u64 * SEQUENCE_PAIRS_PER_KIND;
        let half_bits = (64 - (n_slots - 1).leading_zeros()).div_ceil(2);
        let round_keys = [1u64, 2, 3, 4].map(|round| mix(seed ^ mix(round)));
        SlotPermutation {
            n_days,
            n_slots,
            half_bits,
            round_keys,
        }
    }

    /// Birth date, region and sequence pair of a person. Beyond `n_slots` persons (about
    /// 86 million) indices wrap and ID numbers repeat.
    fn slot(&self, person_index: u64) -> (NaiveDate, usize, u64) {
        let mask = (1u64 << self.half_bits) - 1;
        let mut slot = person_index % self.n_slots;
        loop {
            let (mut left, mut right) = (slot >> self.half_bits, slot & mask);
            for key in self.round_keys {
                (left, right) = (right, left ^ (mix(right ^ key) & mask));
            }
            slot = (left << self.half_bits) | right;
            if slot < self.n_slots {
                break;
            }
        }
        let day = i32::try_from(slot % self.n_days).expect("fewer days than i32::MAX");
        let (rest, n_regions) = (slot / self.n_days, REGIONS.len() as u64);
        let birth = date_of(day_number(BIRTH_FIRST) + day);
        (birth, (rest % n_regions) as usize, rest / n_regions)
    }
}

impl Person {
    fn assign_id_number(&mut self, kind: u64) {
        let sequence = sequence(kind, self.sequence_pair, self.male);
        self.id_number = id_number(self.region, self.birth, sequence);
    }
}

/// The three-digit sequence of an ID number: `kind` picks the quarter (see
/// `SEQUENCE_PAIRS_PER_KIND`), and the number is odd for men.
fn sequence(kind: u64, sequence_pair: u64, male: bool) -> u64 {
    2 * (kind * SEQUENCE_PAIRS_PER_KIND + sequence_pair) + u64::from(male)
}

fn id_number(region: usize, birth: NaiveDate, sequence: u64) -> String {
    let (region_code, birth) = (REGIONS[region].0, render_compact_date(birth));
    let first17 = format!("{region_code}{birth}{sequence:03}");
    let digits: &[u8; 17] = first17.as_bytes().try_into().expect("6 + 8 + 3 digits");
    format!("{first17}{}", char::from(check_digit(digits)))
}

/// The ID number as sent: maybe wrong digits (a typo or a transposition, which the check digit
/// catches), maybe the legacy 15-digit form, lower-case x, spaces or full-width digits.
fn render_id_number(rng: &mut StdRng, person: &Person, error_rate: f64) -> String {
    let mut digits = person.id_number.clone().into_bytes();
    let wrong_digits = rng.gen_bool(error_rate);
    if wrong_digits {
        let differs = |&pos: &usize| digits[pos] != digits[pos + 1];
        let transposable: Vec<usize> = (0..16).filter(differs).collect();
        if rng.gen_bool(0.5) && !transposable.is_empty() {
            let pos = pick_from(rng, &transposable);
            digits.swap(pos, pos + 1);
        } else {
            let pos = pick(rng, 17);
            digits[pos] = b'0' + (digits[pos] - b'0' + rng.gen_range(1..10u8)) % 10;
        }
    }
    // Legacy numbers have no check digit, so wrong digits there would pass for a real number.
    if !wrong_digits && (1930..=1999).contains(&person.birth.year()) && rng.gen_bool(error_rate) {
        digits = [&digits[..6], &digits[8..17]].concat();
    }
    let mut text = String::from_utf8(digits).expect("ASCII digits");
    if rng.gen_bool(error_rate) {
        text = text.to_lowercase();
    }
    if rng.gen_bool(error_rate) {
        let (region, rest) = text.split_at(6);
        let (birth, sequence) = rest.split_at(rest.len() - 4);
        let forms = [
            format!("{region} {birth} {sequence}"),
            format!(" {text} "),
            format!("{text} "),
        ];
        text = forms[pick(rng, forms.len())].clone();
    }
    if rng.gen_bool(error_rate) {
        text = to_full_width(&text);
    }
    text
}

/// A date as departments write it: 1990-01-02 mostly, else 19900102, 1990/1/2, 1990.1.2,
/// 1990年1月2日 or with a midnight time.
fn render_date(rng: &mut StdRng, date: NaiveDate, error_rate: f64) -> String {
    let (year, month, day) = (date.year(), date.month(), date.day());
    match rng.gen_bool(error_rate).then(|| rng.gen_range(0..5u32)) {
        None => render_iso_date(date),
        Some(0) => render_compact_date(date),
        Some(1) => format!("{year}/{month}/{day}"),
        Some(2) => format!("{year}.{month}.{day}"),
        Some(3) => format!("{year}年{month}月{day}日"),
        Some(_) => format!("{} 00:00:00", render_iso_date(date)),
    }
}

fn render_iso_date(date: NaiveDate) -> String {
    format!("{}-{:02}-{:02}", date.year(), date.month(), date.day())
}

fn render_compact_date(date: NaiveDate) -> String {
    format!("{}{:02}{:02}", date.year(), date.month(), date.day())
}

/// 男/女 mostly, else M/F, 1/2 (quoted or not) or 男性/女性.
fn render_gender(rng: &mut StdRng, male: bool, error_rate: f64) -> TagText {
    let forms = [["女", "F", "2", "女性"], ["男", "M", "1", "男性"]][usize::from(male)];
    match rng.gen_bool(error_rate).then(|| rng.gen_range(1..=4u32)) {
        Some(4) => TagText::Number((2 - u8::from(male)).into()),
        form => TagText::from(forms[form.unwrap_or(0) as usize]),
    }
}

/// A mobile number: 1, a second digit 3..9, then nine digits.
fn random_phone(rng: &mut StdRng) -> String {
    let (second_digit, rest) = (rng.gen_range(3..=9u32), rng.gen_range(0..1_000_000_000u32));
    format!("1{second_digit}{rest:09}")
}

/// A twin's or namesake's own phone, when the other person has one.
fn another_phone(rng: &mut StdRng, other_phones: &[String]) -> Vec<String> {
    let has_phone = !other_phones.is_empty();
    Vec::from_iter(has_phone.then(|| random_phone(rng)))
}

/// A passport-style secondary ID.
fn random_other_id(rng: &mut StdRng) -> String {
    format!("E{:08}", rng.gen_range(0..100_000_000u32))
}

fn random_letter(rng: &mut StdRng) -> char {
    char::from(b'A' + rng.gen_range(0..26u8))
}

/// A mobile number as sent: +86 138-0000-1234, 0086 13800001234, 138 0000 1234, full width.
fn render_phone(rng: &mut StdRng, phone: &str, error_rate: f64) -> String {
    let (head, middle, tail) = (&phone[..3], &phone[3..7], &phone[7..]);
    let text = match rng.gen_bool(error_rate).then(|| rng.gen_range(0..5u32)) {
        None => phone.to_string(),
        Some(0) => format!("+86 {head}-{middle}-{tail}"),
        Some(1) => format!("0086 {phone}"),
        Some(2) => format!("{head} {middle} {tail}"),
        Some(3) => format!("+86{phone}"),
        Some(_) => format!("{head}-{middle}-{tail}"),
    };
    maybe_full_width(rng, text, error_rate)
}

/// 浙江省杭州市西湖区文三路123号5幢2单元301室, or abbreviated to 杭州西湖区文三路123号…,
/// with stray spaces or full-width digits.
fn render_address(rng: &mut StdRng, address: &Address, error_rate: f64) -> String {
    let (_, city, district) = REGIONS[address.region];
    let head = if rng.gen_bool(error_rate) {
        format!("{}{district}", city.trim_end_matches('市'))
    } else {
        format!("浙江省{city}{district}")
    };
    let gap = if rng.gen_bool(error_rate) { " " } else { "" };
    let Address {
        street, number, unit, ..
    } = address;
    let unit = unit.map(|(building, unit, room)| format!("{building}幢{unit}单元{room}室"));
    let text = format!("{head}{gap}{street}{number}号{}", unit.unwrap_or_default());
    maybe_full_width(rng, text, error_rate)
}

/// 汉族 mostly; sometimes without 族 or as the GB 3304 code.
fn render_ethnicity(rng: &mut StdRng, ethnicity: usize, error_rate: f64) -> String {
    let (name, code, _) = ETHNICITIES[ethnicity];
    match rng.gen_bool(error_rate).then(|| rng.gen_bool(0.5)) {
        None => name.to_string(),
        Some(true) => code.to_string(),
        Some(false) => name.trim_end_matches('族').to_string(),
    }
}

/// RFC 3339 in China's +08:00; `observed` counts seconds from the start of the window.
fn render_observed_at(observed: i64) -> String {
    let day = i32::try_from(observed / SECONDS_PER_DAY).expect("within the window");
    let second_of_day = observed % SECONDS_PER_DAY;
    let (hour, minute) = (second_of_day / 3600, second_of_day / 60 % 60);
    let second = second_of_day % 60;
    let date = render_iso_date(date_of(day_number(OBSERVED_FIRST) + day));
    format!("{date}T{hour:02}:{minute:02}:{second:02}+08:00")
}

fn maybe_full_width(rng: &mut StdRng, text: String, error_rate: f64) -> String {
    if rng.gen_bool(error_rate) {
        to_full_width(&text)
    } else {
        text
    }
}

fn to_full_width(text: &str) -> String {
    let full_width = |c: char| char::from_u32(c as u32 + 0xFEE0).expect("printable ASCII has full-width forms");
    text.chars()
        .map(|c| match c {
            ' ' => '\u{3000}',
            '!'..='~' => full_width(c),
            other => other,
        })
        .collect()
}

fn day_number((year, month, day): (i32, u32, u32)) -> i32 {
    let date = NaiveDate::from_ymd_opt(year, month, day).expect("constant dates are real");
    date.num_days_from_ce()
}

fn date_of(day_number: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day_number).expect("days within chrono's range")
}

/// An index below `len`, drawn as u32 so every platform consumes the same random stream.
fn pick(rng: &mut StdRng, len: usize) -> usize {
    rng.gen_range(0..u32::try_from(len).expect("tables are small")) as usize
}

fn pick_from<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[pick(rng, items.len())]
}

fn pick_weighted<T: Copy>(rng: &mut StdRng, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|&(_, weight)| weight).sum();
    let mut roll = rng.gen_range(0..total);
    for &(item, weight) in weighted {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    unreachable!("roll is below the total weight")
}

/// Knuth's method; fine for the small means used here (means above 50 count as 50).
fn poisson(rng: &mut StdRng, mean: f64) -> usize {
    let limit = (-mean.min(50.0)).exp();
    let mut product: f64 = rng.gen();
    let mut count = 0;
    while product > limit && count < 200 {
        product *= rng.gen::<f64>();
        count += 1;
    }
    count
}

/// The SplitMix64 finalizer: a fixed, well-spread hash of a u64.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanse::id_number::normalize_id_number;
    use crate::model::{SourceId, TagCode};
    use std::collections::{BTreeSet, HashMap, HashSet};

    /// `n_records` records; there are more than enough persons, and the stream is cut.
    fn generate(seed: u64, n_records: usize, missing_id_rate: f64, error_rate: f64) -> Vec<SynthRecord> {
        let (n_persons, defaults) = (n_records, SynthConfig::default());
        let config = SynthConfig {
            seed,
            n_persons,
            missing_id_rate,
            error_rate,
            ..defaults
        };
        Vec::from_iter(Generator::new(config, &Catalog::shipped()).take(n_records))
    }

    fn config_with(n_persons: usize) -> SynthConfig {
        SynthConfig {
            n_persons,
            ..SynthConfig::default()
        }
    }

    fn text_of(record: &SynthRecord, tag: &str) -> Option<String> {
        let value = record.record.tags.get(tag)?.clone()?.into_string();
        (!value.is_empty()).then_some(value)
    }

    fn normalized_id(record: &SynthRecord) -> Option<String> {
        normalize_id_number(&text_of(record, "id_number")?).ok()
    }

    #[track_caller]
    fn check_id_numbers(missing_id_rate: f64, error_rate: f64, unique_min: f64) {
        let records = generate(21, 10_000, missing_id_rate, error_rate);
        let person_id = |record: &SynthRecord| Some((record.true_person, normalized_id(record)?));
        let ids: Vec<(u64, String)> = records.iter().filter_map(person_id).collect();
        let mut persons_by_id: HashMap<&str, BTreeSet<u64>> = HashMap::new();
        for (person, id) in &ids {
            persons_by_id.entry(id).or_default().insert(*person);
        }
        // Wrong digits are the one corruption that makes a number unusable; the messy forms
        // (legacy, full width, spaces, lower-case x) all normalize.
        let expected = (1.0 - missing_id_rate) * (1.0 - error_rate);
        let usable = ids.len() as f64 / records.len() as f64;
        assert!((usable - expected).abs() < 0.02, "usable {usable}, expected {expected}");
        let one_person = |(_, id): &&(u64, String)| persons_by_id[id.as_str()].len() == 1;
        let unique = ids.iter().filter(one_person).count() as f64 / ids.len() as f64;
        assert!(unique >= unique_min, "share naming one person {unique}");
    }

    #[test]
    fn usable_id_numbers_follow_the_rates_and_name_their_person() {
        check_id_numbers(0.15, 0.1, 0.97);
        check_id_numbers(0.0, 0.0, 1.0);
        check_id_numbers(0.3, 0.05, 0.97);
        check_id_numbers(0.05, 0.3, 0.97);
    }

    #[test]
    fn clean_id_numbers_embed_birth_date_and_gender_and_stay_with_their_person() {
        let mut ids_by_person: HashMap<u64, BTreeSet<String>> = HashMap::new();
        for record in generate(5, 20_000, 0.0, 0.0) {
            let id = normalized_id(&record).expect("uncorrupted numbers validate");
            assert_eq!(text_of(&record, "id_number"), Some(id.clone()), "18 digits");
            if let Some(birth_date) = text_of(&record, "birth_date") {
                assert_eq!(birth_date.replace('-', ""), id[6..14], "birth date");
            }
            if let Some(gender) = text_of(&record, "gender") {
                let odd = (id.as_bytes()[16] - b'0') % 2 == 1;
                assert_eq!(gender == "男", odd, "odd for men: {id} {gender}");
            }
            ids_by_person.entry(record.true_person).or_default().insert(id);
        }
        assert!(ids_by_person.values().all(|ids| ids.len() == 1), "one number each");
    }

    #[test]
    fn records_pass_the_catalog_check_and_keys_are_unique() {
        let catalog = Catalog::shipped();
        let mut keys = HashSet::new();
        for SynthRecord { record, .. } in generate(11, 20_000, 0.15, 0.1) {
            let source = SourceId::parse(&record.source).expect("well-formed source");
            assert!(catalog.source(&source).is_some(), "{source} in the catalog");
            for tag in record.tags.keys().map(|tag| TagCode::new(tag.as_str())) {
                catalog.check_tag(&source, &tag).expect("tag allowed for its source");
            }
            let prefix = format!("{}.", record.source.to_ascii_lowercase());
            let department_tags = record.tags.keys().filter(|tag| tag.starts_with(&prefix));
            assert!((3..=8).contains(&department_tags.count()), "3 to 8 department tags");
            let observed_at = record.observed_at.expect("observed_at is set");
            let time = chrono::DateTime::parse_from_rfc3339(&observed_at).expect("RFC 3339");
            let in_window = (2015..=2025).contains(&time.year());
            assert!(in_window && observed_at.ends_with("+08:00"), "{observed_at}");
            assert!(keys.insert((record.source, record.record_id)), "unique keys");
        }
    }

    type MessyCase = (&'static str, fn(&str) -> bool);

    #[test]
    fn messy_forms_departments_send_are_present() {
        let records = generate(9, 20_000, 0.15, 0.1);
        let cases: [MessyCase; 16] = [
            ("id_number", |id| id.ends_with('x')),
            ("id_number", |id| id.contains('３')),
            ("id_number", |id| id.len() == 15),
            ("id_number", |id| id.contains(' ')),
            ("name", |name| name.chars().any(|c| TRADITIONAL_CHARS.contains(c))),
            ("name", |name| name.contains('·')),
            ("name", |name| name.contains(' ')),
            ("birth_date", |date| date.contains('年')),
            ("birth_date", |date| date.len() == 8),
            ("birth_date", |date| date.contains('/')),
            ("phone", |phone| phone.starts_with("+86 ")),
            ("phone", |phone| phone.starts_with("0086 ")),
            ("gender", |gender| gender == "M" || gender == "F"),
            ("gender", |gender| gender == "1" || gender == "2"),
            ("address", |address| address.starts_with("杭州")),
            ("ethnicity", |ethnicity| ethnicity == "汉"),
        ];
        for (case_idx, (tag, is_messy)) in cases.into_iter().enumerate() {
            let mut values = records.iter().filter_map(|record| text_of(record, tag));
            assert!(values.any(|value| is_messy(&value)), "case {case_idx}: {tag}");
        }
        let values = Vec::from_iter(records.iter().flat_map(|record| record.record.tags.values()));
        assert!(values.contains(&&None), "null values");
        assert!(values.contains(&&Some(TagText::from(""))), "empty values");
    }

    /// What clean records say about their person.
    #[derive(Default)]
    struct Observed {
        id: String,
        name: String,
        hukou: String,
        phones: Vec<String>,
        addresses: Vec<String>,
    }

    #[test]
    fn hard_cases_are_present() {
        let mut persons: BTreeMap<u64, Observed> = BTreeMap::new();
        for record in generate(3, 20_000, 0.0, 0.0) {
            let observed = persons.entry(record.true_person).or_default();
            observed.id = normalized_id(&record).expect("clean");
            let (name, hukou) = (text_of(&record, "name"), text_of(&record, "hukou_address"));
            observed.name = name.unwrap_or(std::mem::take(&mut observed.name));
            observed.hukou = hukou.unwrap_or(std::mem::take(&mut observed.hukou));
            observed.phones.extend(text_of(&record, "phone"));
            observed.addresses.extend(text_of(&record, "address"));
        }
        let persons = Vec::from_iter(persons.into_values());
        let mut born_on: HashMap<&str, Vec<&Observed>> = HashMap::new();
        for person in &persons {
            born_on.entry(&person.id[6..14]).or_default().push(person);
        }
        let (mut n_twins, mut n_namesakes) = (0, 0);
        for same_birth in born_on.values() {
            for (idx, a) in same_birth.iter().enumerate() {
                for b in &same_birth[idx + 1..] {
                    let same_family = a.name.chars().next() == b.name.chars().next();
                    let same_home = !a.hukou.is_empty() && a.hukou == b.hukou;
                    n_twins += usize::from(same_family && same_home && a.name != b.name);
                    n_namesakes += usize::from(a.name == b.name && a.id[..6] != b.id[..6]);
                }
            }
        }
        assert!(
            n_twins > 0 && n_namesakes > 0,
            "{n_twins} twins, {n_namesakes} namesakes"
        );
        let mut children = persons.iter().filter(|person| &person.id[6..10] >= "2010");
        assert!(children.clone().count() > 0 && children.all(|child| child.phones.is_empty()));
        // Records come in observed_at order, so a mover's values change once, never back.
        let n_changes = |values: &[String]| values.windows(2).filter(|v| v[0] != v[1]).count();
        for values in [|p: &Observed| p.phones.clone(), |p: &Observed| p.addresses.clone()] {
            let changes = Vec::from_iter(persons.iter().map(|person| n_changes(&values(person))));
            assert!(changes.contains(&1) && changes.iter().all(|&n| n <= 1), "{changes:?}");
        }
    }

    #[test]
    fn streams_lazily_and_ends_after_the_last_person() {
        let mut generator = Generator::new(config_with(50_000_000), &Catalog::shipped());
        assert_eq!(generator.by_ref().take(1_000).count(), 1_000);
        assert!(generator.pending.len() < 100, "holds only the current persons");
        let generator = Generator::new(config_with(101), &Catalog::shipped());
        let persons = BTreeSet::from_iter(generator.map(|record| record.true_person));
        assert_eq!(persons, BTreeSet::from_iter(0..101));
    }

    #[test]
    fn same_seed_same_records_other_seed_other_records() {
        let records = generate(7, 2_000, 0.15, 0.1);
        assert_eq!(records, generate(7, 2_000, 0.15, 0.1));
        assert_ne!(records, generate(8, 2_000, 0.15, 0.1));
    }

    #[test]
    fn tables_are_consistent() {
        let n_chars = [SIMPLIFIED_CHARS, TRADITIONAL_CHARS].map(|chars| chars.chars().count());
        assert_eq!(n_chars[0], n_chars[1]);
        let surnames = Tables::new().surnames;
        assert!(surnames.len() >= 60 && surnames.iter().any(|(name, _)| *name == "欧阳"));
        let codes = BTreeSet::from_iter(REGIONS.iter().map(|(code, _, _)| *code));
        assert_eq!(codes.len(), REGIONS.len());
        for (code, city, district) in REGIONS {
            assert!(code.len() == 6 && code.starts_with("33") && city.ends_with('市'));
            assert!(district.ends_with('区') || district.ends_with('市'), "{district}");
        }
        assert_eq!(ETHNICITIES[UYGHUR].0, "维吾尔族");
    }
}
