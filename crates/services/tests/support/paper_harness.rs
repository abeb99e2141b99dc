// The paper engine's test harness, shared by paper_trading.rs and paper_orders.rs (included as
// items, so each test file keeps its own imports).

/// Bounded wait used only as a hang guard.
const GUARD: Duration = Duration::from_secs(20);

/// A market that trades BTCUSDT and ETHUSDT at prices the test sets.
#[derive(Debug, Default)]
struct TestMarket {
    prices: Mutex<HashMap<Symbol, Decimal>>,
}

#[async_trait]
impl MarketService for TestMarket {
    fn symbols(&self) -> Vec<Symbol> {
        vec![symbol("BTCUSDT"), symbol("ETHUSDT")]
    }

    async fn ticker(&self, wanted: &Symbol) -> Result<Ticker, ServiceError> {
        if !self.symbols().contains(wanted) {
            return Err(ServiceError::UnknownSymbol(wanted.clone()));
        }
        let price = self.prices.lock().unwrap().get(wanted).copied();
        price
            .map(|price| fixtures::ticker(wanted.as_str(), &price.to_string()))
            .ok_or_else(|| ServiceError::NoPrice(wanted.clone()))
    }

    async fn tickers(&self) -> Vec<Ticker> {
        let mut all = Vec::new();
        for s in self.symbols() {
            if let Ok(ticker) = self.ticker(&s).await {
                all.push(ticker);
            }
        }
        all
    }
}

/// A database file under the temp directory, removed with its directory on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "cryptobot-paper-{name}-{}-{nanos}",
            std::process::id()
        ));
        Self(dir.join("paper.db"))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// A second connection to the file, for tampering with it behind the engine's back.
    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.0).unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct World {
    market: Arc<TestMarket>,
    bus: Arc<dyn EventBus>,
    clock: Arc<ManualClock>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
}

fn world() -> World {
    world_with_bus_capacity(4096)
}

fn world_with_bus_capacity(capacity: usize) -> World {
    let clock = Arc::new(ManualClock::new(instant()));
    World {
        market: Arc::new(TestMarket::default()),
        bus: Arc::new(InMemoryBus::new(
            capacity,
            Arc::clone(&clock) as Arc<dyn Clock>,
        )),
        clock,
        metrics: Arc::new(ServiceMetrics::default()),
        shutdown: CancellationToken::new(),
    }
}

impl World {
    fn try_start(&self, storage: Storage) -> Result<(PaperTrading, JoinHandle<()>), ServiceError> {
        PaperTrading::spawn(
            TradingConfig::default(),
            storage,
            Arc::clone(&self.market) as Arc<dyn MarketService>,
            Arc::clone(&self.bus),
            Arc::clone(&self.clock) as Arc<dyn Clock>,
            Arc::clone(&self.metrics),
            self.shutdown.clone(),
        )
    }

    fn start(&self, storage: Storage) -> (PaperTrading, JoinHandle<()>) {
        self.try_start(storage).unwrap()
    }

    fn start_in_memory(&self) -> (PaperTrading, JoinHandle<()>) {
        self.start(Storage::open(":memory:").unwrap())
    }

    /// Sets the market price without publishing a ticker.
    fn price(&self, name: &str, price: &str) {
        self.market
            .prices
            .lock()
            .unwrap()
            .insert(symbol(name), dec(price));
    }

    /// Sets the market price and publishes the ticker on the bus, as the feed does.
    fn tick(&self, name: &str, price: &str) {
        self.price(name, price);
        self.bus
            .publish(Event::Ticker(fixtures::ticker(name, price)));
    }

    async fn stop(&self, task: JoinHandle<()>) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, task)
            .await
            .expect("engine stops promptly")
            .expect("engine does not panic");
    }

    fn count(&self, counter: &impl prometheus::core::Collector) -> u64 {
        ServiceMetrics::total(counter)
    }
}

fn order(side: Side, name: &str, size: OrderSize, id: Option<&str>) -> TradeRequest {
    TradeRequest::new(
        symbol(name),
        side,
        size,
        id.map(|id| ClientOrderId::parse(id).unwrap()),
        TradeOrigin::Manual,
    )
    .unwrap()
}

fn qty(text: &str) -> OrderSize {
    OrderSize::Quantity(dec(text))
}

async fn guarded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, call)
        .await
        .expect("call answers in time")
}

/// Waits (with a hang guard) for the next event that `pick` accepts.
async fn next<T>(
    events: &mut broadcast::Receiver<Arc<Envelope>>,
    pick: impl Fn(&Event) -> Option<T>,
) -> T {
    guarded(async {
        loop {
            let envelope = events.recv().await.expect("bus open");
            if let Some(found) = pick(&envelope.event) {
                return found;
            }
        }
    })
    .await
}

/// Every event (tickers left out) up to and including the first one `last` accepts.
async fn collect_until(
    events: &mut broadcast::Receiver<Arc<Envelope>>,
    last: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    guarded(async {
        let mut seen = Vec::new();
        loop {
            let envelope = events.recv().await.expect("bus open");
            if matches!(envelope.event, Event::Ticker(_)) {
                continue;
            }
            seen.push(envelope.event.clone());
            if last(&envelope.event) {
                return seen;
            }
        }
    })
    .await
}

fn is_take_profit_alert(event: &Event) -> bool {
    matches!(event, Event::Alert(alert) if alert.alert_type == AlertType::TakeProfitTriggered)
}

/// Every event already waiting, tickers left out.
fn drain(events: &mut broadcast::Receiver<Arc<Envelope>>) -> Vec<Event> {
    let mut found = Vec::new();
    while let Ok(envelope) = events.try_recv() {
        if !matches!(envelope.event, Event::Ticker(_)) {
            found.push(envelope.event.clone());
        }
    }
    found
}

fn alerts_of(events: &[Event], kind: AlertType) -> Vec<(Severity, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Alert(alert) if alert.alert_type == kind => {
                Some((alert.severity, alert.message.clone()))
            }
            _ => None,
        })
        .collect()
}

fn assert_books_balance(summary: &PortfolioSummary) {
    let cost: Decimal = summary
        .positions
        .iter()
        .map(|p| p.position.cost_basis)
        .sum();
    assert_eq!(
        summary.cash + cost,
        dec("10000") + summary.realized_pnl,
        "cash + cost basis == initial cash + realized pnl"
    );
}


/// The engine's bus of a run that continues an epoch: an in-process bus that says what the
/// previous run published of the books.
#[derive(Debug)]
struct ContinuedBus {
    inner: InMemoryBus,
    inherited: cryptobot_services::Inherited,
}

impl EventBus for ContinuedBus {
    fn publish(&self, event: Event) -> Arc<Envelope> {
        self.inner.publish(event)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.subscribe()
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    fn last_seq(&self, channel: &cryptobot_domain::Channel) -> u64 {
        self.inner.last_seq(channel)
    }

    fn replay(
        &self,
        channel: &cryptobot_domain::Channel,
        after_seq: u64,
    ) -> cryptobot_services::Replay {
        self.inner.replay(channel, after_seq)
    }

    fn inherited(&self) -> Option<cryptobot_services::Inherited> {
        Some(self.inherited.clone())
    }
}
