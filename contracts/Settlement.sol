// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title PilotChain settlement ledger for Grid Singularity (gsy-e) trades
/// @notice Records every matched gsy-e trade exactly once and keeps each participant's bill.
/// Ids are gsy-e uuids as bytes32: the uuid's 128-bit integer, zero-padded on the left.
/// Energy is kWh scaled by 10**ENERGY_DECIMALS; price and fee are euro cents scaled by
/// 10**PRICE_DECIMALS. In every trade the buyer owes the seller the trade's price; the fee
/// is recorded as gsy-e reports it and is not part of the bills.
/// @dev Compile with evmVersion "london": the chain is a Clique network without PUSH0.
contract Settlement is AccessControl {
    /// @notice Accounts allowed to record trades (the gsy-e bridge).
    bytes32 public constant RECORDER_ROLE = keccak256("RECORDER_ROLE");
    /// @notice Energy amounts are kWh * 10**ENERGY_DECIMALS.
    uint8 public constant ENERGY_DECIMALS = 18;
    /// @notice Prices, fees and bill money are euro cents * 10**PRICE_DECIMALS.
    uint8 public constant PRICE_DECIMALS = 18;
    /// @notice Unit of energy amounts before scaling.
    string public constant ENERGY_UNIT = "kWh";
    /// @notice Unit of prices, fees and bill money before scaling.
    string public constant PRICE_UNIT = "euro cent";

    /// @notice One matched gsy-e trade, as the bridge submits it.
    /// @dev Every field is a full calldata word; narrower types only bound the values
    /// (uint96 amounts keep the uint128 bill totals from overflowing for 2**32 trades).
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

    uint256 private constant _HALF = 128;
    uint256 private constant _LOW_MASK = type(uint128).max;

    /// @dev Trade id => number of the block that recorded it (0: not recorded). The block
    /// number costs nothing more than a flag and leads clients to the TradeSettled log.
    mapping(bytes32 tradeId => uint256 blockNumber) private _recordedIn;
    /// @dev A bill is two packed slots, `energy << 128 | money`: the selling side (energy
    /// sold, money receivable) and the buying side (energy bought, money payable). A trade
    /// touches only the seller's selling side and the buyer's buying side, one read and one
    /// write each, instead of four counters.
    mapping(bytes32 participant => uint256 packed) private _selling;
    mapping(bytes32 participant => uint256 packed) private _buying;
    mapping(bytes32 participant => address wallet) private _walletOf;
    mapping(address wallet => bytes32 participant) private _participantOf;

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

    error EmptyBatch();
    /// @notice The trade at `index` of the batch has a zero trade id, seller or buyer.
    error InvalidTrade(uint256 index);
    error ZeroAddress();
    error ZeroParticipant();
    error WalletAlreadyRegistered(address wallet, bytes32 participant);
    error ParticipantNotRegistered(bytes32 participant);
    error WalletNotRegistered(address wallet);
    error BillOverflow(bytes32 participant);

    /// @param admin the grid operator, who manages roles and the participant registry
    /// @param recorder the bridge account given RECORDER_ROLE, or address(0) for none yet
    constructor(address admin, address recorder) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (recorder != address(0)) _grantRole(RECORDER_ROLE, recorder);
    }

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
        for (uint256 i; i < count; ) {
            if (_record(trades[i], i)) {
                unchecked { ++recorded; }
            }
            unchecked { ++i; }
        }
        unchecked { skipped = count - recorded; }
        emit BatchRecorded(recorded, skipped);
    }

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

    /// @notice Whether a trade id has been recorded.
    function isRecorded(bytes32 tradeId) external view returns (bool) {
        return _recordedIn[tradeId] != 0;
    }

    /// @notice The block that recorded a trade (its TradeSettled log is there), 0 if none.
    function recordedIn(bytes32 tradeId) external view returns (uint256) {
        return _recordedIn[tradeId];
    }

    /// @notice A participant's running bill; all zero for a participant without trades.
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

    /// @dev Records one trade unless its id is known; returns whether it was new. Fields are
    /// read straight from calldata: copies would exceed the legacy code generator's stack.
    function _record(Trade calldata trade, uint256 index) private returns (bool) {
        bytes32 tradeId = trade.tradeId;
        if (_recordedIn[tradeId] != 0) return false;
        if (tradeId == bytes32(0) || trade.seller == bytes32(0) || trade.buyer == bytes32(0)) {
            revert InvalidTrade(index);
        }
        _recordedIn[tradeId] = block.number;
        _addTo(_selling, trade.seller, trade.energy, trade.price);
        _addTo(_buying, trade.buyer, trade.energy, trade.price);
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

    /// @dev Adds a trade to one side of a bill. Overflow reverts the whole batch rather than
    /// wrap a bill; with uint96 amounts it needs 2**32 maximal trades.
    function _addTo(
        mapping(bytes32 => uint256) storage sides,
        bytes32 participant,
        uint256 energy,
        uint256 money
    ) private {
        (uint256 energyTotal, uint256 moneyTotal) = _unpack(sides[participant]);
        energyTotal += energy;
        moneyTotal += money;
        if (energyTotal > _LOW_MASK || moneyTotal > _LOW_MASK) revert BillOverflow(participant);
        sides[participant] = (energyTotal << _HALF) | moneyTotal;
    }

    function _unpack(uint256 packed) private pure returns (uint256 energy, uint256 money) {
        return (packed >> _HALF, packed & _LOW_MASK);
    }
}
