//! The farm as affinity plugins read it: the member table (names, weights), fetched from farmgate
//! only when it changes and kept between calls, and the live state handed in with each call.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use crate::MemberState;
use crate::bindings::farmgate::plugin::types as wit;

/// How many member tables an instance keeps (a plugin bound to several farms sees several; a
/// reload makes new ones).
const TABLES_KEPT: usize = 16;

thread_local! {
    /// Member tables by number, most recently used last.
    static TABLES: RefCell<Vec<(u64, Rc<Table>)>> = const { RefCell::new(Vec::new()) };
}

/// A farm's member table: what changes only with a reload, an added member or a new weight.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) name: String,
    pub(crate) members: Vec<Info>,
}

#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub(crate) name: String,
    pub(crate) weight: u32,
}

/// A member's rarer figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Figures {
    pub(crate) latency_ewma_us: u64,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) bytes: u64,
}

/// A farm with its members' live state, for one member choice.
pub struct Farm<'a> {
    host_side: Option<&'a wit::Farm>,
    table: Rc<Table>,
    live: Vec<wit::MemberLive>,
    sticky: Option<u32>,
    sequence: u64,
    figures: OnceCell<Vec<Figures>>,
}

/// One member of a [`Farm`], as a choice sees it.
#[derive(Clone, Copy)]
pub struct Member<'f> {
    farm: &'f Farm<'f>,
    id: u32,
}

impl<'a> Farm<'a> {
    /// The farm farmgate handed to this call: the member table from this instance's own
    /// copies, fetched when the call names a table it has not seen.
    #[doc(hidden)]
    pub fn from_host(host_side: &'a wit::Farm, live: wit::FarmLive) -> Farm<'a> {
        let table = TABLES.with(|tables| {
            let mut tables = tables.borrow_mut();
            if let Some(i) = tables.iter().position(|(n, _)| *n == live.table) {
                let hit = tables.remove(i);
                let table = Rc::clone(&hit.1);
                tables.push(hit);
                return table;
            }
            let fetched = host_side.table();
            let table = Rc::new(Table {
                name: fetched.name,
                members: fetched
                    .members
                    .into_iter()
                    .map(|m| Info {
                        name: m.name,
                        weight: m.weight,
                    })
                    .collect(),
            });
            if tables.len() >= TABLES_KEPT {
                tables.remove(0);
            }
            tables.push((live.table, Rc::clone(&table)));
            table
        });
        Farm {
            host_side: Some(host_side),
            table,
            live: live.members,
            sticky: live.sticky_member,
            sequence: live.sequence,
            figures: OnceCell::new(),
        }
    }

    /// A farm built for a test.
    pub(crate) fn built(
        table: Table,
        live: Vec<wit::MemberLive>,
        figures: Vec<Figures>,
        sticky: Option<u32>,
        sequence: u64,
    ) -> Farm<'static> {
        Farm {
            host_side: None,
            table: Rc::new(table),
            live,
            sticky,
            sequence,
            figures: OnceCell::from(figures),
        }
    }

    /// The farm's name from the config.
    pub fn name(&self) -> &str {
        &self.table.name
    }

    /// Every member, by id (0, 1, ...).
    pub fn members(&self) -> impl ExactSizeIterator<Item = Member<'_>> + '_ {
        (0..self.len() as u32).map(|id| Member { farm: self, id })
    }

    /// Members that take new requests.
    pub fn online_members(&self) -> impl Iterator<Item = Member<'_>> + '_ {
        self.members().filter(|m| m.is_online())
    }

    /// How many members the farm has (removed ones included: ids stay valid).
    pub fn len(&self) -> usize {
        self.table.members.len().min(self.live.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn member(&self, id: u32) -> Option<Member<'_>> {
        ((id as usize) < self.len()).then_some(Member { farm: self, id })
    }

    pub fn member_named(&self, name: &str) -> Option<Member<'_>> {
        self.members().find(|m| m.name() == name)
    }

    /// The member the client's verified affinity cookie names, if it has a valid one.
    pub fn sticky_member(&self) -> Option<u32> {
        self.sticky
    }

    /// How many member choices farmgate has asked for in this farm so far, across threads and
    /// instances: what round-robin policies rotate by.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    fn figures(&self, id: u32) -> Figures {
        let all = self.figures.get_or_init(|| match self.host_side {
            Some(h) => h
                .figures()
                .into_iter()
                .map(|f| Figures {
                    latency_ewma_us: f.latency_ewma_us,
                    requests: f.requests,
                    failures: f.failures,
                    bytes: f.bytes,
                })
                .collect(),
            None => Vec::new(),
        });
        all.get(id as usize).copied().unwrap_or_default()
    }
}

impl<'f> Member<'f> {
    /// The member's id: its index in the farm, what a decision names.
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn name(&self) -> &'f str {
        &self.farm.table.members[self.id as usize].name
    }

    pub fn weight(&self) -> u32 {
        self.farm.table.members[self.id as usize].weight
    }

    pub fn state(&self) -> MemberState {
        self.farm.live[self.id as usize].state
    }

    /// Requests in flight to the member now.
    pub fn in_flight(&self) -> u32 {
        self.farm.live[self.id as usize].in_flight
    }

    /// Whether the member takes new requests.
    pub fn is_online(&self) -> bool {
        self.state() == MemberState::Active
    }

    /// Moving average of the time to response headers, in microseconds (0: no data yet). The
    /// first of the rarer figures read in a call fetches them all.
    pub fn latency_ewma_us(&self) -> u64 {
        self.farm.figures(self.id).latency_ewma_us
    }

    /// Requests the member has been sent.
    pub fn requests(&self) -> u64 {
        self.farm.figures(self.id).requests
    }

    /// Requests the member failed.
    pub fn failures(&self) -> u64 {
        self.farm.figures(self.id).failures
    }

    /// Body bytes to and from the member so far (request and response).
    pub fn bytes(&self) -> u64 {
        self.farm.figures(self.id).bytes
    }
}

impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("name", &self.name())
            .field("state", &self.state())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl std::fmt::Debug for Farm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Farm")
            .field("name", &self.name())
            .field("members", &self.members().collect::<Vec<_>>())
            .field("sticky_member", &self.sticky)
            .field("sequence", &self.sequence)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::{MemberState, testing};

    #[test]
    fn a_test_farm_reads_like_one_from_farmgate() {
        let f = testing::farm("web", 3)
            .state(1, MemberState::Draining)
            .in_flight(2, 5)
            .latency_us(0, 900)
            .weight(2, 3)
            .build();
        let online: Vec<u32> = f.online_members().map(|m| m.id()).collect();
        assert_eq!(online, [0, 2]);
        assert_eq!(f.member_named("web2").map(|m| m.id()), Some(1));
        assert_eq!(
            f.member(2).map(|m| (m.in_flight(), m.weight())),
            Some((5, 3))
        );
        assert_eq!(f.member(0).map(|m| m.latency_ewma_us()), Some(900));
        assert!(f.member(3).is_none());
        assert_eq!(f.name(), "web");
    }
}
