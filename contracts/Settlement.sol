// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title PilotChain settlement ledger for Grid Singularity (gsy-e) trades
/// @notice Records every matched gsy-e trade exactly once and keeps each participant's bill;
/// compares every metered participant's trades across its grid connection with what its meter
/// measured, slot by slot, and bills the difference against the grid operator.
/// Ids are gsy-e uuids as bytes32: the uuid's 128-bit integer, zero-padded on the left.
/// Energy is kWh scaled by 10**ENERGY_DECIMALS; price and fee are euro cents scaled by
/// 10**PRICE_DECIMALS. In every trade the buyer owes the seller the trade's price; the fee
/// is recorded as gsy-e reports it and is not part of the bills.
///
/// Metering: the operator registers each meter (its id, its own secp256k1 signing key, the
/// participant it measures and that participant's home area). Meters sign cumulative import and
/// export registers in Wh with EIP-712 (domain "PilotChain Settlement", version "1", this chain,
/// this contract); READER_ROLE accounts submit the readings at slot boundaries. A trade of a
/// metered participant in a market other than its home area crosses its meter: its energy adds
/// to the participant's sold or bought energy of the trade's slot. Once a slot's deadline has
/// passed anyone may close it: with readings at both ends it is balanced at the operator's rates
/// (shortfall, excess and surplus, each charged only from one Wh on, the registers'
/// resolution); without them it is closed as unmetered (no charge). Money is
/// energy * rate / 10**18, rounded down; the grid operator's bill (participant OPERATOR)
/// takes the other side of every charge and credit.
///
/// Billing periods: a period's statement is the change of a participant's bill between the
/// closing of the previous period and the closing of this one, in recording order. Trades and
/// balancing recorded after a period was closed therefore appear on the next statement, whatever
/// slot they belong to; a closed statement never changes.
/// @dev Compile with evmVersion "london": the chain is a Clique network without PUSH0.
contract Settlement is AccessControl {
    /// @notice Accounts allowed to record trades (the gsy-e bridge).
    bytes32 public constant RECORDER_ROLE = keccak256("RECORDER_ROLE");
    /// @notice Accounts allowed to submit meter readings (the ingest writer).
    bytes32 public constant READER_ROLE = keccak256("READER_ROLE");
    /// @notice The grid operator's participant id: the counterparty of all balancing.
    bytes32 public constant OPERATOR = keccak256("pilotchain:grid-operator");
    /// @notice Energy amounts are kWh * 10**ENERGY_DECIMALS.
    uint8 public constant ENERGY_DECIMALS = 18;
    /// @notice Prices, fees and bill money are euro cents * 10**PRICE_DECIMALS.
    uint8 public constant PRICE_DECIMALS = 18;
    /// @notice Unit of energy amounts before scaling.
    string public constant ENERGY_UNIT = "kWh";
    /// @notice Unit of prices, fees and bill money before scaling.
    string public constant PRICE_UNIT = "euro cent";
    /// @notice Seconds a reading may lie ahead of the block's time (clocks differ a little).
    uint256 public constant FUTURE_TOLERANCE = 300;
    /// @notice One Wh in the contract's energy unit (kWh * 10**18).
    uint256 public constant WH = 10 ** 15;
    /// @notice The EIP-712 type meters sign.
    bytes32 public constant READING_TYPEHASH = keccak256(
        "MeterReading(bytes32 meter,uint64 time,uint64 importWh,uint64 exportWh,bytes32 minutesAnchor)"
    );

    /// @notice One matched gsy-e trade, as the bridge submits it.
    /// @dev Every field is a full calldata word; narrower types only bound the values.
    struct Trade {
        bytes32 tradeId;
        bytes32 market;
        uint64 timeSlot;
        bytes32 seller;
        bytes32 buyer;
        bytes32 sellerOrigin;
        bytes32 buyerOrigin;
        uint96 energy;
        uint96 price;
        uint96 fee;
    }

    /// @notice A meter's signed cumulative registers at `time` (unix seconds, a slot boundary).
    struct Reading {
        bytes32 meter;
        uint64 time;
        uint64 importWh;
        uint64 exportWh;
        bytes32 minutesAnchor;
        bytes signature;
    }

    /// @notice Why submitReadings did not store a reading. Duplicate (the same reading is
    /// already stored) is a harmless skip; every other value is a refusal.
    enum Refusal {
        None,
        Duplicate,
        UnknownMeter,
        NotOnSlotBoundary,
        FutureDated,
        Conflicting,
        OutOfOrder,
        MeterInactive,
        BadSignature,
        RegistersBackwards
    }

    /// @notice A slot of a metered participant: still open, balanced, or closed unmetered.
    enum SlotStatus {
        Open,
        Balanced,
        Unmetered
    }

    struct Meter {
        address signer;
        uint64 lastTime;
        bool hasReadings;
        bytes32 participant;
        uint64 activeFrom;
        uint64 activeUntil;
        uint64 lastImport;
        uint64 lastExport;
    }

    struct Rates {
        uint64 fromSlot;
        uint96 shortfall;
        uint96 gridSupply;
        uint96 feedIn;
    }

    /// @notice A participant's fixed statement for one billing period.
    struct Statement {
        uint256 energySold;
        uint256 energyBought;
        uint256 moneyReceivable;
        uint256 moneyPayable;
        uint256 balancingCharges;
        uint256 balancingCredits;
        int256 net;
        bool paid;
    }

    /// @dev The measured and traded energy of one closed slot and what it costs.
    struct Balance {
        uint256 importEnergy;
        uint256 exportEnergy;
        uint256 sold;
        uint256 bought;
        uint256 shortfallCharge;
        uint256 excessCharge;
        uint256 surplusCredit;
    }

    // Bill words (`_selling`, `_buying`, `_balancing`): bit 255 marks a metered participant,
    // bits 224..254 the number of closed periods when the word last changed, then two 112-bit
    // amounts (energy and money; for balancing, charges and credits). Keeping the flag and the
    // period in the word the trade path reads anyway makes both free for it.
    uint256 private constant _METERED = 1 << 255;
    uint256 private constant _PERIOD_SHIFT = 224;
    uint256 private constant _PERIOD_MASK = (1 << 31) - 1;
    uint256 private constant _HIGH_SHIFT = 112;
    uint256 private constant _AMOUNT = (1 << 112) - 1;
    uint256 private constant _AMOUNTS = (1 << 224) - 1;
    // Slot words (`_slots`): bought in bits 0..119, sold in 120..239, the SlotStatus above.
    uint256 private constant _SOLD_SHIFT = 120;
    uint256 private constant _SLOT_AMOUNT = (1 << 120) - 1;
    uint256 private constant _STATUS_SHIFT = 240;
    // Stored registers: a presence bit, import in bits 64..127, export in 0..63.
    uint256 private constant _PRESENT = 1 << 128;
    uint256 private constant _ACTIVE = type(uint64).max;
    // secp256k1's order / 2: larger s values are the malleable twin of a valid signature.
    uint256 private constant _HALF_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    bytes32 private constant _DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 private constant _NAME_HASH = keccak256("PilotChain Settlement");
    bytes32 private constant _VERSION_HASH = keccak256("1");

    /// @notice Length of a settlement slot in seconds (gsy-e's slot length).
    uint64 public slotSeconds = 900;
    /// @notice Seconds after a slot's end before it may be closed.
    uint64 public closeDelay = 3600;
    /// @notice End of the newest closed slot: rates can only change from here on.
    uint64 public closedUntil;
    /// @dev Set by the first meter or rates: the slot length cannot change after that.
    bool private _slotLengthFixed;

    /// @dev Trade id => number of the block that recorded it (0: not recorded).
    mapping(bytes32 tradeId => uint256 blockNumber) private _recordedIn;
    mapping(bytes32 participant => uint256 packed) private _selling;
    mapping(bytes32 participant => uint256 packed) private _buying;
    mapping(bytes32 participant => uint256 packed) private _balancing;
    /// @dev Bill words as they were before their first change in a later period:
    /// `(first period they describe) << 224 | amounts`, ascending.
    mapping(bytes32 participant => uint256[] snapshots) private _sellingAt;
    mapping(bytes32 participant => uint256[] snapshots) private _buyingAt;
    mapping(bytes32 participant => uint256[] snapshots) private _balancingAt;
    mapping(bytes32 participant => address wallet) private _walletOf;
    mapping(address wallet => bytes32 participant) private _participantOf;

    mapping(bytes32 meter => Meter) private _meters;
    mapping(bytes32 participant => bytes32[] meters) private _metersOf;
    mapping(bytes32 participant => bytes32 area) private _homeArea;
    mapping(bytes32 meter => mapping(uint64 time => uint256 registers)) private _registers;
    mapping(bytes32 meter => mapping(uint64 time => bytes32 anchor)) private _anchors;
    mapping(bytes32 participant => mapping(uint64 slot => uint256 packed)) private _slots;
    Rates[] private _rates;
    uint64[] private _periodEnds;
    mapping(uint256 period => mapping(bytes32 participant => bool)) private _paid;

    /// @notice A trade was recorded and both bills were updated.
    event TradeSettled(
        bytes32 indexed tradeId,
        bytes32 indexed seller,
        bytes32 indexed buyer,
        bytes32 market,
        uint64 timeSlot,
        bytes32 sellerOrigin,
        bytes32 buyerOrigin,
        uint96 energy,
        uint96 price,
        uint96 fee
    );
    /// @notice A batch was processed: `skipped` trades were already recorded and left alone.
    event BatchRecorded(uint256 recorded, uint256 skipped);
    event ParticipantRegistered(bytes32 indexed participant, address indexed wallet);
    event ParticipantUnregistered(bytes32 indexed participant, address indexed wallet);
    /// @notice A boundary trade arrived for a slot already closed: recorded and billed as a
    /// trade, but not balanced.
    event BoundaryTradeAfterClose(bytes32 indexed tradeId, bytes32 indexed participant, uint64 slot);
    /// @notice A meter measures `participant` from `activeFrom` on.
    event MeterRegistered(
        bytes32 indexed meter,
        bytes32 indexed participant,
        address signer,
        bytes32 homeArea,
        uint64 activeFrom
    );
    /// @notice A meter measures nothing after `activeUntil`; its readings stay.
    event MeterDeactivated(bytes32 indexed meter, bytes32 indexed participant, uint64 activeUntil);
    event ReadingRecorded(
        bytes32 indexed meter,
        uint64 indexed time,
        uint64 importWh,
        uint64 exportWh,
        bytes32 minutesAnchor
    );
    /// @notice The reading at `index` of a submitted batch was not stored, for `reason`.
    event ReadingRefused(uint256 index, bytes32 indexed meter, uint64 time, Refusal reason);
    event ReadingsSubmitted(uint256 recorded, uint256 duplicates, uint256 refused);
    event SlotSecondsSet(uint64 slotSeconds);
    event CloseDelaySet(uint64 closeDelay);
    event RatesSet(uint64 indexed fromSlot, uint96 shortfallRate, uint96 gridSupplyRate, uint96 feedInRate);
    /// @notice A slot was balanced; energies in kWh * 10**18, money in cents * 10**18.
    event SlotBalanced(
        bytes32 indexed participant,
        uint64 indexed slot,
        bytes32 meter,
        uint256 importEnergy,
        uint256 exportEnergy,
        uint256 sold,
        uint256 bought,
        uint256 shortfallCharge,
        uint256 excessCharge,
        uint256 surplusCredit
    );
    /// @notice A slot lacked a boundary reading at its deadline: closed without charge.
    event SlotUnmetered(bytes32 indexed participant, uint64 indexed slot, uint256 sold, uint256 bought);
    event PeriodClosed(uint256 indexed period, uint64 endSlot);
    event StatementPaid(uint256 indexed period, bytes32 indexed participant);

    error EmptyBatch();
    /// @notice The trade at `index` of the batch has a zero trade id, seller or buyer.
    error InvalidTrade(uint256 index);
    error ZeroAddress();
    error ZeroParticipant();
    error WalletAlreadyRegistered(address wallet, bytes32 participant);
    error ParticipantNotRegistered(bytes32 participant);
    error WalletNotRegistered(address wallet);
    error BillOverflow(bytes32 participant);
    error ZeroId();
    error MeterAlreadyRegistered(bytes32 meter);
    error UnknownMeter(bytes32 meter);
    error MeterStillActive(bytes32 participant, bytes32 meter);
    error MeterNotActive(bytes32 meter);
    /// @notice A meter cannot end before its own start or its newest reading.
    error MeterEndTooEarly(bytes32 meter, uint64 earliest);
    error NotOnSlotBoundary(uint64 time);
    error SlotLengthFixed();
    error InvalidSlotLength();
    error RatesNotAfter(uint64 fromSlot, uint64 earliest);
    error LengthMismatch();
    error NotMetered(uint256 index, bytes32 participant);
    error InvalidSlot(uint256 index, uint64 slot);
    error SlotNotDue(uint256 index, uint256 dueAt);
    error PeriodNotAfter(uint64 endSlot, uint64 previousEnd);
    error PeriodNotOver(uint64 endSlot);
    error UnknownPeriod(uint256 period);
    error AlreadyPaid(uint256 period, bytes32 participant);

    /// @param admin the grid operator, who manages roles, registries, rates and periods
    /// @param recorder the bridge account given RECORDER_ROLE, or address(0) for none yet
    /// @param reader the ingest account given READER_ROLE, or address(0) for none yet
    constructor(address admin, address recorder, address reader) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (recorder != address(0)) _grantRole(RECORDER_ROLE, recorder);
        if (reader != address(0)) _grantRole(READER_ROLE, reader);
    }

    // --- trades ---------------------------------------------------------------------------

    /// @notice Records a batch of trades; trades whose id is already recorded are skipped.
    /// @dev Skipping instead of reverting makes a retried or overlapping batch harmless.
    /// @return recorded how many trades were new
    /// @return skipped how many were already recorded (also emitted in BatchRecorded)
    function recordTrades(Trade[] calldata trades)
        external
        onlyRole(RECORDER_ROLE)
        returns (uint256 recorded, uint256 skipped)
    {
        uint256 count = trades.length;
        if (count == 0) revert EmptyBatch();
        uint256 periods = _periodEnds.length;
        for (uint256 i; i < count; ) {
            if (_record(trades[i], i, periods)) {
                unchecked { ++recorded; }
            }
            unchecked { ++i; }
        }
        unchecked { skipped = count - recorded; }
        emit BatchRecorded(recorded, skipped);
    }

    /// @notice Whether a trade id has been recorded.
    function isRecorded(bytes32 tradeId) external view returns (bool) {
        return _recordedIn[tradeId] != 0;
    }

    /// @notice The block that recorded a trade (its TradeSettled log is there), 0 if none.
    function recordedIn(bytes32 tradeId) external view returns (uint256) {
        return _recordedIn[tradeId];
    }

    // --- participants -----------------------------------------------------------------------

    /// @notice Links a participant id to a wallet (both directions); replaces an older link
    /// of the participant. A wallet serves one participant at a time.
    function registerParticipant(bytes32 participant, address wallet)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (participant == bytes32(0)) revert ZeroParticipant();
        if (wallet == address(0)) revert ZeroAddress();
        bytes32 current = _participantOf[wallet];
        if (current != bytes32(0) && current != participant) {
            revert WalletAlreadyRegistered(wallet, current);
        }
        address previous = _walletOf[participant];
        if (previous != address(0) && previous != wallet) {
            delete _participantOf[previous];
            emit ParticipantUnregistered(participant, previous);
        }
        _walletOf[participant] = wallet;
        _participantOf[wallet] = participant;
        emit ParticipantRegistered(participant, wallet);
    }

    /// @notice Removes a participant's wallet link; its bill and trades stay.
    function unregisterParticipant(bytes32 participant) external onlyRole(DEFAULT_ADMIN_ROLE) {
        address wallet = _walletOf[participant];
        if (wallet == address(0)) revert ParticipantNotRegistered(participant);
        delete _walletOf[participant];
        delete _participantOf[wallet];
        emit ParticipantUnregistered(participant, wallet);
    }

    /// @notice A participant's running bill of trades; all zero for one without trades.
    function billOf(bytes32 participant)
        public
        view
        returns (
            uint256 energySold,
            uint256 energyBought,
            uint256 moneyReceivable,
            uint256 moneyPayable
        )
    {
        (energySold, moneyReceivable) = _unpack(_selling[participant]);
        (energyBought, moneyPayable) = _unpack(_buying[participant]);
    }

    /// @notice A participant's running balancing: charges it owes the grid operator and credits
    /// it is owed. For OPERATOR, `charges` is what it owes (the credits of all others) and
    /// `credits` what it is owed (their charges).
    function balancingOf(bytes32 participant) external view returns (uint256 charges, uint256 credits) {
        (charges, credits) = _unpack(_balancing[participant]);
    }

    /// @notice The bill of the participant linked to `wallet`, so a wallet can read its own.
    function billOfWallet(address wallet)
        external
        view
        returns (
            bytes32 participant,
            uint256 energySold,
            uint256 energyBought,
            uint256 moneyReceivable,
            uint256 moneyPayable
        )
    {
        participant = _participantOf[wallet];
        if (participant == bytes32(0)) revert WalletNotRegistered(wallet);
        (energySold, energyBought, moneyReceivable, moneyPayable) = billOf(participant);
    }

    /// @notice The wallet linked to a participant id, address(0) if none.
    function walletOf(bytes32 participant) external view returns (address) {
        return _walletOf[participant];
    }

    /// @notice The participant id linked to a wallet, bytes32(0) if none.
    function participantOf(address wallet) external view returns (bytes32) {
        return _participantOf[wallet];
    }

    // --- meters -----------------------------------------------------------------------------

    /// @notice Registers a meter of `participant`, whose own area is `homeArea` (a house
    /// participant's home area is its own uuid): trades of the participant in any other market
    /// cross the meter. A participant has one active meter; its next one starts where the
    /// previous one ended (the first at time 0). Use replaceMeter to swap an active meter.
    function registerMeter(bytes32 meter, address signer, bytes32 participant, bytes32 homeArea)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (participant == bytes32(0) || homeArea == bytes32(0)) revert ZeroParticipant();
        bytes32[] storage history = _metersOf[participant];
        uint64 activeFrom;
        uint256 count = history.length;
        if (count != 0) {
            bytes32 previous = history[count - 1];
            activeFrom = _meters[previous].activeUntil;
            if (activeFrom == _ACTIVE) revert MeterStillActive(participant, previous);
        }
        _homeArea[participant] = homeArea;
        _selling[participant] |= _METERED;
        _buying[participant] |= _METERED;
        _addMeter(meter, signer, participant, homeArea, activeFrom);
    }

    /// @notice Swaps a participant's active meter at slot boundary `at`: the old one measures
    /// up to `at`, the new one from `at` on (both need a reading at `at`). Old readings stay.
    function replaceMeter(bytes32 oldMeter, bytes32 newMeter, address newSigner, uint64 at)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        bytes32 participant = _deactivate(oldMeter, at);
        _addMeter(newMeter, newSigner, participant, _homeArea[participant], at);
    }

    /// @notice Ends a meter at slot boundary `at`; readings up to `at` are still accepted.
    function deactivateMeter(bytes32 meter, uint64 at) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _deactivate(meter, at);
    }

    /// @notice A meter's registration and newest reading.
    function meterOf(bytes32 meter) external view returns (Meter memory) {
        return _meters[meter];
    }

    /// @notice Every meter a participant has had, oldest first.
    function metersOf(bytes32 participant) external view returns (bytes32[] memory) {
        return _metersOf[participant];
    }

    /// @notice The home area of a metered participant, bytes32(0) if it has no meter.
    function homeAreaOf(bytes32 participant) external view returns (bytes32) {
        return _homeArea[participant];
    }

    // --- readings ---------------------------------------------------------------------------

    /// @notice Stores signed boundary readings. A reading that is already stored identically
    /// is skipped (retries are harmless); any other unusable reading is skipped with a
    /// ReadingRefused event naming its index and the reason, so one bad meter never holds up
    /// the others' readings in the same batch.
    /// @return recorded how many readings were stored
    /// @return duplicates how many were already stored
    function submitReadings(Reading[] calldata readings)
        external
        onlyRole(READER_ROLE)
        returns (uint256 recorded, uint256 duplicates)
    {
        uint256 count = readings.length;
        if (count == 0) revert EmptyBatch();
        bytes32 separator = domainSeparator();
        for (uint256 i; i < count; ) {
            Reading calldata reading = readings[i];
            Refusal reason = _refusal(reading, separator);
            if (reason == Refusal.None) {
                _store(reading);
                unchecked { ++recorded; }
            } else if (reason == Refusal.Duplicate) {
                unchecked { ++duplicates; }
            } else {
                emit ReadingRefused(i, reading.meter, reading.time, reason);
            }
            unchecked { ++i; }
        }
        unchecked { emit ReadingsSubmitted(recorded, duplicates, count - recorded - duplicates); }
    }

    /// @notice What submitReadings would do with `reading` now (None: store it).
    function checkReading(Reading calldata reading) external view returns (Refusal) {
        return _refusal(reading, domainSeparator());
    }

    /// @notice The EIP-712 digest a meter signs for these values on this chain and contract.
    function readingDigest(
        bytes32 meter,
        uint64 time,
        uint64 importWh,
        uint64 exportWh,
        bytes32 minutesAnchor
    ) external view returns (bytes32) {
        return _digest(domainSeparator(), meter, time, importWh, exportWh, minutesAnchor);
    }

    /// @notice The EIP-712 domain separator: name "PilotChain Settlement", version "1", this
    /// chain's id and this contract's address.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this))
        );
    }

    /// @notice A stored reading; `present` is false if the meter has none at `time`.
    function readingOf(bytes32 meter, uint64 time)
        external
        view
        returns (bool present, uint64 importWh, uint64 exportWh, bytes32 minutesAnchor)
    {
        uint256 registers = _registers[meter][time];
        present = registers != 0;
        importWh = uint64(registers >> 64);
        exportWh = uint64(registers);
        minutesAnchor = _anchors[meter][time];
    }

    // --- rates, slots, deadlines ----------------------------------------------------------

    /// @notice Sets the slot length in seconds; only before the first meter or rates.
    function setSlotSeconds(uint64 seconds_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_slotLengthFixed) revert SlotLengthFixed();
        if (seconds_ == 0) revert InvalidSlotLength();
        slotSeconds = seconds_;
        emit SlotSecondsSet(seconds_);
    }

    /// @notice Sets how long after a slot's end it may be closed (readings may arrive late).
    function setCloseDelay(uint64 delay) external onlyRole(DEFAULT_ADMIN_ROLE) {
        closeDelay = delay;
        emit CloseDelaySet(delay);
    }

    /// @notice Balancing rates (euro cents per kWh * 10**PRICE_DECIMALS) from slot `fromSlot`
    /// on, until the next change. Changes are appended: `fromSlot` must follow the previous
    /// change and may not reach back into closed slots. Before the first change all are 0.
    function setRates(uint64 fromSlot, uint96 shortfallRate, uint96 gridSupplyRate, uint96 feedInRate)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (fromSlot % slotSeconds != 0) revert NotOnSlotBoundary(fromSlot);
        uint256 count = _rates.length;
        uint64 earliest = closedUntil;
        if (count != 0 && _rates[count - 1].fromSlot >= earliest) {
            earliest = _rates[count - 1].fromSlot + 1;
        }
        if (fromSlot < earliest) revert RatesNotAfter(fromSlot, earliest);
        _slotLengthFixed = true;
        _rates.push(Rates(fromSlot, shortfallRate, gridSupplyRate, feedInRate));
        emit RatesSet(fromSlot, shortfallRate, gridSupplyRate, feedInRate);
    }

    /// @notice The rates that apply to `slot`.
    function ratesAt(uint64 slot)
        public
        view
        returns (uint96 shortfallRate, uint96 gridSupplyRate, uint96 feedInRate)
    {
        uint256 low;
        uint256 high = _rates.length;
        while (low < high) {
            uint256 middle = (low + high) / 2;
            if (_rates[middle].fromSlot <= slot) low = middle + 1;
            else high = middle;
        }
        if (low == 0) return (0, 0, 0);
        Rates storage rates = _rates[low - 1];
        return (rates.shortfall, rates.gridSupply, rates.feedIn);
    }

    /// @notice Every rate change so far, oldest first.
    function ratesHistory() external view returns (Rates[] memory) {
        return _rates;
    }

    // --- closing slots --------------------------------------------------------------------

    /// @notice Closes slot `slots[i]` of metered participant `participants[i]`, for every i;
    /// callable by anyone once `slot + slotSeconds + closeDelay` has passed. Closing a closed
    /// slot does nothing.
    /// @return closed how many slots were closed by this call
    function closeSlots(bytes32[] calldata participants, uint64[] calldata slots)
        external
        returns (uint256 closed)
    {
        uint256 count = participants.length;
        if (count == 0) revert EmptyBatch();
        if (count != slots.length) revert LengthMismatch();
        uint256 periods = _periodEnds.length;
        for (uint256 i; i < count; ) {
            if (_close(participants[i], slots[i], i, periods)) {
                unchecked { ++closed; }
            }
            unchecked { ++i; }
        }
    }

    /// @notice A metered participant's slot: status and boundary energy sold and bought.
    function slotOf(bytes32 participant, uint64 slot)
        external
        view
        returns (SlotStatus status, uint256 sold, uint256 bought)
    {
        uint256 packed = _slots[participant][slot];
        return (
            SlotStatus(packed >> _STATUS_SHIFT),
            (packed >> _SOLD_SHIFT) & _SLOT_AMOUNT,
            packed & _SLOT_AMOUNT
        );
    }

    // --- billing periods ------------------------------------------------------------------

    /// @notice Closes the next billing period at `endSlot`, fixing every participant's
    /// statement: what its bill changed by since the previous period was closed.
    function closePeriod(uint64 endSlot) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (endSlot % slotSeconds != 0) revert NotOnSlotBoundary(endSlot);
        if (endSlot > block.timestamp) revert PeriodNotOver(endSlot);
        uint256 count = _periodEnds.length;
        if (count != 0 && endSlot <= _periodEnds[count - 1]) {
            revert PeriodNotAfter(endSlot, _periodEnds[count - 1]);
        }
        _periodEnds.push(endSlot);
        emit PeriodClosed(count + 1, endSlot);
    }

    /// @notice How many periods are closed; they are numbered 1 to this.
    function periodCount() external view returns (uint256) {
        return _periodEnds.length;
    }

    /// @notice The end slot a closed period was given.
    function periodEnd(uint256 period) external view returns (uint64) {
        _checkPeriod(period);
        return _periodEnds[period - 1];
    }

    /// @notice A participant's statement of a closed period.
    function statementOf(uint256 period, bytes32 participant)
        external
        view
        returns (Statement memory statement)
    {
        _checkPeriod(period);
        (statement.energySold, statement.moneyReceivable) =
            _change(_selling, _sellingAt, participant, period);
        (statement.energyBought, statement.moneyPayable) =
            _change(_buying, _buyingAt, participant, period);
        (statement.balancingCharges, statement.balancingCredits) =
            _change(_balancing, _balancingAt, participant, period);
        statement.net = int256(statement.moneyReceivable + statement.balancingCredits)
            - int256(statement.moneyPayable + statement.balancingCharges);
        statement.paid = _paid[period][participant];
    }

    /// @notice Marks a participant's statement of a closed period as paid (outside the chain).
    function markPaid(uint256 period, bytes32 participant) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _checkPeriod(period);
        if (_paid[period][participant]) revert AlreadyPaid(period, participant);
        _paid[period][participant] = true;
        emit StatementPaid(period, participant);
    }

    // --- internals: trades ----------------------------------------------------------------

    /// @dev Records one trade unless its id is known; returns whether it was new. Fields are
    /// read straight from calldata: copies would exceed the legacy code generator's stack.
    function _record(Trade calldata trade, uint256 index, uint256 periods) private returns (bool) {
        bytes32 tradeId = trade.tradeId;
        if (_recordedIn[tradeId] != 0) return false;
        if (tradeId == bytes32(0) || trade.seller == bytes32(0) || trade.buyer == bytes32(0)) {
            revert InvalidTrade(index);
        }
        _recordedIn[tradeId] = block.number;
        if (_addTo(_selling, _sellingAt, trade.seller, trade.energy, trade.price, periods)) {
            _crossing(trade, trade.seller, true);
        }
        if (_addTo(_buying, _buyingAt, trade.buyer, trade.energy, trade.price, periods)) {
            _crossing(trade, trade.buyer, false);
        }
        emit TradeSettled(
            tradeId,
            trade.seller,
            trade.buyer,
            trade.market,
            trade.timeSlot,
            trade.sellerOrigin,
            trade.buyerOrigin,
            trade.energy,
            trade.price,
            trade.fee
        );
        return true;
    }

    /// @dev Adds a trade of a metered participant to its slot if it crosses the meter.
    function _crossing(Trade calldata trade, bytes32 participant, bool selling) private {
        if (trade.market == _homeArea[participant]) return;
        uint64 slot = trade.timeSlot;
        uint256 packed = _slots[participant][slot];
        if (packed >> _STATUS_SHIFT != 0) {
            emit BoundaryTradeAfterClose(trade.tradeId, participant, slot);
            return;
        }
        uint256 sold = (packed >> _SOLD_SHIFT) & _SLOT_AMOUNT;
        uint256 bought = packed & _SLOT_AMOUNT;
        if (selling) sold += trade.energy;
        else bought += trade.energy;
        if (sold > _SLOT_AMOUNT || bought > _SLOT_AMOUNT) revert BillOverflow(participant);
        _slots[participant][slot] = (sold << _SOLD_SHIFT) | bought;
    }

    /// @dev Adds to the two amounts of a bill word and returns whether the participant is
    /// metered. The first change after a period was closed keeps the word's old amounts as a
    /// snapshot, which fixes the closed periods' statements. Overflow reverts the whole batch
    /// rather than wrap a bill; with uint96 amounts it needs 2**16 maximal trades.
    function _addTo(
        mapping(bytes32 => uint256) storage words,
        mapping(bytes32 => uint256[]) storage snapshots,
        bytes32 participant,
        uint256 high,
        uint256 low,
        uint256 periods
    ) private returns (bool metered) {
        uint256 packed = words[participant];
        uint256 amounts = packed & _AMOUNTS;
        if (amounts != 0) {
            uint256 marker = (packed >> _PERIOD_SHIFT) & _PERIOD_MASK;
            if (marker != periods) snapshots[participant].push(((marker + 1) << _PERIOD_SHIFT) | amounts);
        }
        high += (amounts >> _HIGH_SHIFT);
        low += amounts & _AMOUNT;
        if (high > _AMOUNT || low > _AMOUNT) revert BillOverflow(participant);
        words[participant] =
            (packed & _METERED) | (periods << _PERIOD_SHIFT) | (high << _HIGH_SHIFT) | low;
        return packed & _METERED != 0;
    }

    function _unpack(uint256 packed) private pure returns (uint256 high, uint256 low) {
        return ((packed >> _HIGH_SHIFT) & _AMOUNT, packed & _AMOUNT);
    }

    // --- internals: meters and readings ---------------------------------------------------

    function _addMeter(
        bytes32 meter,
        address signer,
        bytes32 participant,
        bytes32 homeArea,
        uint64 activeFrom
    ) private {
        if (meter == bytes32(0)) revert ZeroId();
        if (signer == address(0)) revert ZeroAddress();
        if (_meters[meter].signer != address(0)) revert MeterAlreadyRegistered(meter);
        _slotLengthFixed = true;
        Meter storage entry = _meters[meter];
        entry.signer = signer;
        entry.participant = participant;
        entry.activeFrom = activeFrom;
        entry.activeUntil = uint64(_ACTIVE);
        _metersOf[participant].push(meter);
        emit MeterRegistered(meter, participant, signer, homeArea, activeFrom);
    }

    function _deactivate(bytes32 meter, uint64 at) private returns (bytes32 participant) {
        Meter storage entry = _meters[meter];
        if (entry.signer == address(0)) revert UnknownMeter(meter);
        if (entry.activeUntil != _ACTIVE) revert MeterNotActive(meter);
        if (at % slotSeconds != 0) revert NotOnSlotBoundary(at);
        uint64 earliest = entry.activeFrom;
        if (entry.hasReadings && entry.lastTime > earliest) earliest = entry.lastTime;
        if (at < earliest) revert MeterEndTooEarly(meter, earliest);
        entry.activeUntil = at;
        participant = entry.participant;
        emit MeterDeactivated(meter, participant, at);
    }

    /// @dev Checks in order of cost; the signature only once the cheap checks passed.
    function _refusal(Reading calldata reading, bytes32 separator) private view returns (Refusal) {
        bytes32 meterId = reading.meter;
        Meter storage meter = _meters[meterId];
        if (meter.signer == address(0)) return Refusal.UnknownMeter;
        uint64 time = reading.time;
        if (time % slotSeconds != 0) return Refusal.NotOnSlotBoundary;
        if (time > block.timestamp + FUTURE_TOLERANCE) return Refusal.FutureDated;
        uint256 stored = _registers[meterId][time];
        if (stored != 0) {
            if (stored == _registersOf(reading) && _anchors[meterId][time] == reading.minutesAnchor) {
                return Refusal.Duplicate;
            }
            return Refusal.Conflicting;
        }
        bool hasReadings = meter.hasReadings;
        if (hasReadings && time <= meter.lastTime) return Refusal.OutOfOrder;
        if (time < meter.activeFrom || time > meter.activeUntil) return Refusal.MeterInactive;
        bytes32 digest = _digest(
            separator, meterId, time, reading.importWh, reading.exportWh, reading.minutesAnchor
        );
        if (_recover(digest, reading.signature) != meter.signer) return Refusal.BadSignature;
        if (hasReadings && (reading.importWh < meter.lastImport || reading.exportWh < meter.lastExport)) {
            return Refusal.RegistersBackwards;
        }
        return Refusal.None;
    }

    function _store(Reading calldata reading) private {
        bytes32 meterId = reading.meter;
        uint64 time = reading.time;
        Meter storage meter = _meters[meterId];
        meter.lastTime = time;
        meter.hasReadings = true;
        meter.lastImport = reading.importWh;
        meter.lastExport = reading.exportWh;
        _registers[meterId][time] = _registersOf(reading);
        // An anchor of zero (no minute readings) costs no storage slot.
        if (reading.minutesAnchor != bytes32(0)) _anchors[meterId][time] = reading.minutesAnchor;
        emit ReadingRecorded(meterId, time, reading.importWh, reading.exportWh, reading.minutesAnchor);
    }

    function _registersOf(Reading calldata reading) private pure returns (uint256) {
        return _PRESENT | (uint256(reading.importWh) << 64) | uint256(reading.exportWh);
    }

    function _digest(
        bytes32 separator,
        bytes32 meter,
        uint64 time,
        uint64 importWh,
        uint64 exportWh,
        bytes32 minutesAnchor
    ) private pure returns (bytes32) {
        bytes32 structHash =
            keccak256(abi.encode(READING_TYPEHASH, meter, time, importWh, exportWh, minutesAnchor));
        return keccak256(abi.encodePacked("\x19\x01", separator, structHash));
    }

    /// @dev The signer of a 65-byte (r, s, v) signature; address(0) for a malformed or
    /// malleable one, which matches no meter.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > _HALF_ORDER || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }

    // --- internals: closing ---------------------------------------------------------------

    function _close(bytes32 participant, uint64 slot, uint256 index, uint256 periods)
        private
        returns (bool)
    {
        if (_homeArea[participant] == bytes32(0)) revert NotMetered(index, participant);
        uint256 length = slotSeconds;
        if (slot % length != 0) revert InvalidSlot(index, slot);
        uint256 end = slot + length;
        uint256 due = end + closeDelay;
        if (block.timestamp < due) revert SlotNotDue(index, due);
        uint256 packed = _slots[participant][slot];
        if (packed >> _STATUS_SHIFT != 0) return false;
        if (end > closedUntil) closedUntil = uint64(end);
        Balance memory balance;
        balance.sold = (packed >> _SOLD_SHIFT) & _SLOT_AMOUNT;
        balance.bought = packed & _SLOT_AMOUNT;
        bytes32 meter = _measured(participant, slot, uint64(end), balance);
        if (meter == bytes32(0)) {
            _slots[participant][slot] = packed | (uint256(SlotStatus.Unmetered) << _STATUS_SHIFT);
            emit SlotUnmetered(participant, slot, balance.sold, balance.bought);
            return true;
        }
        _slots[participant][slot] = packed | (uint256(SlotStatus.Balanced) << _STATUS_SHIFT);
        _charge(participant, slot, balance, periods);
        emit SlotBalanced(
            participant,
            slot,
            meter,
            balance.importEnergy,
            balance.exportEnergy,
            balance.sold,
            balance.bought,
            balance.shortfallCharge,
            balance.excessCharge,
            balance.surplusCredit
        );
        return true;
    }

    /// @dev Finds the meter active over the whole slot with readings at both its ends and fills
    /// in the measured energy; returns bytes32(0) if there is none.
    function _measured(bytes32 participant, uint64 start, uint64 end, Balance memory balance)
        private
        view
        returns (bytes32 meterId)
    {
        bytes32[] storage history = _metersOf[participant];
        for (uint256 i = history.length; i != 0; ) {
            unchecked { --i; }
            Meter storage meter = _meters[history[i]];
            if (meter.activeFrom <= start && end <= meter.activeUntil) {
                uint256 first = _registers[history[i]][start];
                uint256 last = _registers[history[i]][end];
                if (first == 0 || last == 0) return bytes32(0);
                balance.importEnergy = (uint64(last >> 64) - uint64(first >> 64)) * WH;
                balance.exportEnergy = (uint64(last) - uint64(first)) * WH;
                return history[i];
            }
            if (meter.activeUntil <= start) return bytes32(0);
        }
        return bytes32(0);
    }

    /// @dev Prices the slot's deviations and books them against the grid operator.
    function _charge(bytes32 participant, uint64 slot, Balance memory balance, uint256 periods)
        private
    {
        (uint256 shortfallRate, uint256 gridSupplyRate, uint256 feedInRate) = ratesAt(slot);
        // Registers count whole Wh while gsy-e trades fractions of one: a deviation below
        // the registers' resolution is rounding, not a deviation.
        if (balance.sold >= balance.exportEnergy + WH) {
            balance.shortfallCharge = (balance.sold - balance.exportEnergy) * shortfallRate / 1e18;
        } else if (balance.exportEnergy >= balance.sold + WH) {
            balance.surplusCredit = (balance.exportEnergy - balance.sold) * feedInRate / 1e18;
        }
        if (balance.importEnergy >= balance.bought + WH) {
            balance.excessCharge = (balance.importEnergy - balance.bought) * gridSupplyRate / 1e18;
        }
        uint256 charges = balance.shortfallCharge + balance.excessCharge;
        uint256 credits = balance.surplusCredit;
        if (charges == 0 && credits == 0) return;
        _addTo(_balancing, _balancingAt, participant, charges, credits, periods);
        _addTo(_balancing, _balancingAt, OPERATOR, credits, charges, periods);
    }

    // --- internals: periods ---------------------------------------------------------------

    function _checkPeriod(uint256 period) private view {
        if (period == 0 || period > _periodEnds.length) revert UnknownPeriod(period);
    }

    /// @dev How much a bill word's two amounts grew during closed period `period`.
    function _change(
        mapping(bytes32 => uint256) storage words,
        mapping(bytes32 => uint256[]) storage snapshots,
        bytes32 participant,
        uint256 period
    ) private view returns (uint256 high, uint256 low) {
        uint256 atEnd = _amountsAt(words, snapshots, participant, period);
        uint256 atStart = _amountsAt(words, snapshots, participant, period - 1);
        high = (atEnd >> _HIGH_SHIFT) - (atStart >> _HIGH_SHIFT);
        low = (atEnd & _AMOUNT) - (atStart & _AMOUNT);
    }

    /// @dev A bill word's amounts when period `period` was closed (0 before any period).
    function _amountsAt(
        mapping(bytes32 => uint256) storage words,
        mapping(bytes32 => uint256[]) storage snapshots,
        bytes32 participant,
        uint256 period
    ) private view returns (uint256) {
        if (period == 0) return 0;
        uint256 packed = words[participant];
        // Unchanged since that period was closed: the current amounts are its closing ones.
        if (((packed >> _PERIOD_SHIFT) & _PERIOD_MASK) < period) return packed & _AMOUNTS;
        // Otherwise the newest snapshot describing a period up to `period` holds them.
        uint256[] storage list = snapshots[participant];
        uint256 low;
        uint256 high = list.length;
        while (low < high) {
            uint256 middle = (low + high) / 2;
            if (list[middle] >> _PERIOD_SHIFT <= period) low = middle + 1;
            else high = middle;
        }
        return low == 0 ? 0 : list[low - 1] & _AMOUNTS;
    }
}
