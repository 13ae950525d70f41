"""Raw input events from the three collectors: tag, sdk and widget.

Every model is strict (no coercion: a number is not a string, 1 is not `true`), frozen,
and ignores unknown fields: they are tolerated for forward compatibility but never reach
an output, because outputs are built from named fields only.

Contact points in `user_data.em` / `user_data.ph` validate only as lowercase hex
SHA-256. When a raw email or phone is found there, ingest (`pipeline.core.parse`)
normalizes and hashes it, validates again, and marks `user_data.raw_pii_hashed` (the
input cannot set it). A value that is neither a digest nor a plausible email/phone is a
schema violation naming the field: forwarding a value we cannot classify would risk
forwarding raw PII.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal, Self, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    WithJsonSchema,
)

from schemas import normalize

Source: TypeAlias = Literal["tag", "sdk", "widget"]
"""Where an event comes from: the raw topic of each collector."""
RecordSource: TypeAlias = Literal["tag", "sdk", "widget", "audience"]
"""Where a raw record comes from: an event's source, or an advertiser's customer list."""
ActionSource: TypeAlias = Literal["web", "app_ios", "app_android", "offline"]
Surface: TypeAlias = Literal["off_platform", "on_platform"]
AttStatus: TypeAlias = Literal["authorized", "denied", "restricted", "not_determined"]
EventName: TypeAlias = Literal[
    "page_visit",
    "view_category",
    "search",
    "add_to_cart",
    "add_to_wishlist",
    "checkout",
    "lead",
    "signup",
    "subscribe",
    "watch_video",
    "custom",
]
WidgetEventName: TypeAlias = Literal["widget_view", "save_click", "follow_click"]
WidgetType: TypeAlias = Literal[
    "save_button", "pin_widget", "board_widget", "profile_widget", "follow_button"
]

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256)]
PLATFORM_ID_PATTERN = r"[\x21-\x7e]{1,256}"
"""An id the platform itself issued (a click id, a widget session): printable ASCII, no
spaces. It becomes a match key (`schemas.identity.MatchKey`), so an event whose click id
or session the platform could never have issued is refused where it enters."""
PlatformId = Annotated[str, StringConstraints(pattern=rf"^{PLATFORM_ID_PATTERN}$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
UserAgent = Annotated[str, StringConstraints(max_length=2048)]
UnixSeconds = Annotated[int, Field(ge=0, le=4_102_444_800)]  # up to 2100-01-01
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
IpAddress = Annotated[str, AfterValidator(normalize.canonical_ip)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$"), AfterValidator(str.upper)]
Amount = Annotated[
    float,
    BeforeValidator(normalize.decimal_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": normalize.DECIMAL_PATTERN, "maxLength": 64},
            ]
        }
    ),
]
"""A number, or a decimal string as Pinterest sends it ("72.39"); always a finite float."""
OptOutTypes = Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z0-9_ ,]*$")]
"""Pinterest's comma-separated privacy flags (`custom_data.opt_out_type`), e.g. `LDP`."""

MAX_LIST_ITEMS = 100

MODEL_CONFIG = ConfigDict(
    extra="ignore",
    frozen=True,
    strict=True,
    allow_inf_nan=False,
    str_max_length=8192,
    cache_strings="keys",  # values (ids, URLs) rarely repeat; caching them costs time
)


class CustomData(BaseModel):
    """Commerce details of an event; keys beyond these are ignored."""

    model_config = MODEL_CONFIG

    currency: Currency | None = None
    value: Amount | None = None
    content_ids: tuple[Identifier, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)
    num_items: int | None = Field(default=None, ge=0, le=1_000_000)
    order_id: Identifier | None = None
    opt_out_type: OptOutTypes | None = None

    @property
    def limited_data_processing(self) -> bool:
        """Whether `opt_out_type` lists `LDP` (Pinterest's limited data processing flag)."""
        if not self.opt_out_type:
            return False
        return any(flag.strip().upper() == "LDP" for flag in self.opt_out_type.split(","))


class Browser(BaseModel):
    """Signals from the browser the event came from."""

    model_config = MODEL_CONFIG

    cookie_id: Identifier | None = None
    dnt: bool = False
    gpc: bool = False
    daa_opt_out: bool = False


class _ContactData(BaseModel):
    """Matching keys common to tag and sdk `user_data`."""

    model_config = MODEL_CONFIG

    em: tuple[Sha256Hex, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)
    ph: tuple[Sha256Hex, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)
    external_id: tuple[Identifier, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)
    client_ip_address: IpAddress | None = None
    client_user_agent: UserAgent | None = None
    click_id: PlatformId | None = None
    """A platform click id: Pinterest's `click_id` / `_epik`, the fbclid inside Meta's `fbc`."""
    _raw_pii_hashed: bool = PrivateAttr(default=False)

    @property
    def raw_pii_hashed(self) -> bool:
        """Whether ingest hashed a raw email or phone found here; never read from input."""
        return self._raw_pii_hashed

    def with_raw_pii_hashed(self) -> Self:
        """A copy recording that ingest hashed a raw email or phone found here."""
        copy = self.model_copy()
        copy._raw_pii_hashed = True
        return copy


class TagUserData(_ContactData):
    """`user_data` of a tag event."""


class SdkUserData(_ContactData):
    """`user_data` of an sdk event."""

    hashed_maids: tuple[Sha256Hex, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)


class Device(BaseModel):
    """The mobile device an sdk event came from."""

    model_config = MODEL_CONFIG

    device_id: Identifier | None = None
    os_version: ShortText | None = None
    att_status: AttStatus | None = None
    ads_opt_out: bool | None = None
    advertising_id: ShortText | None = None


class App(BaseModel):
    """The advertiser's app an sdk event came from."""

    model_config = MODEL_CONFIG

    app_id: Identifier | None = None
    app_name: ShortText | None = None
    app_version: ShortText | None = None


class _EventBase(BaseModel):
    """Fields every source shares."""

    model_config = MODEL_CONFIG

    event_id: EventId
    event_time: UnixSeconds
    user_id: Identifier | None = None
    surface: Surface = "off_platform"
    opt_out: bool = False
    opt_out_type: Literal["LDP"] | None = None
    custom_data: CustomData | None = None


class TagEvent(_EventBase):
    """A web conversion-tag or web Conversions-API event (`raw.tag`)."""

    source: ClassVar[Literal["tag"]] = "tag"

    event_name: EventName
    advertiser_id: Identifier
    action_source: Literal["web"] = "web"
    event_source_url: Url | None = None
    user_data: TagUserData | None = None
    browser: Browser | None = None

    @property
    def raw_pii_hashed(self) -> bool:
        """Whether a raw email or phone was hashed at ingest."""
        return self.user_data is not None and self.user_data.raw_pii_hashed

    @property
    def client_ip_address(self) -> str | None:
        """The client IP address, if sent."""
        return None if self.user_data is None else self.user_data.client_ip_address

    @property
    def client_user_agent(self) -> str | None:
        """The client user agent, if sent."""
        return None if self.user_data is None else self.user_data.client_user_agent

    @property
    def page_url(self) -> str | None:
        """The URL of the page the event happened on."""
        return self.event_source_url


class SdkEvent(_EventBase):
    """An app SDK or server Conversions-API event (`raw.sdk`).

    `browser` is an extension of the raw record: a server upload of a web event may carry the
    browser's signals, and they are honoured when `action_source` is `web`.
    """

    source: ClassVar[Literal["sdk"]] = "sdk"

    event_name: EventName
    advertiser_id: Identifier
    action_source: ActionSource
    user_data: SdkUserData | None = None
    device: Device | None = None
    app: App | None = None
    browser: Browser | None = None

    @property
    def raw_pii_hashed(self) -> bool:
        """Whether a raw email or phone was hashed at ingest."""
        return self.user_data is not None and self.user_data.raw_pii_hashed

    @property
    def client_ip_address(self) -> str | None:
        """The client IP address, if sent."""
        return None if self.user_data is None else self.user_data.client_ip_address

    @property
    def client_user_agent(self) -> str | None:
        """The client user agent, if sent."""
        return None if self.user_data is None else self.user_data.client_user_agent

    @property
    def page_url(self) -> None:
        """App events have no page."""
        return None


class WidgetEvent(_EventBase):
    """A Save button or embedded widget event from a third-party site (`raw.widget`)."""

    source: ClassVar[Literal["widget"]] = "widget"
    action_source: ClassVar[Literal["web"]] = "web"

    event_name: WidgetEventName
    advertiser_id: Identifier | None = None
    session_id: PlatformId | None = None
    """The platform's own session in the widget (a `session:` match key)."""
    site_domain: Identifier
    page_url: Url | None = None
    widget_type: WidgetType
    browser: Browser | None = None
    client_ip_address: IpAddress | None = None
    client_user_agent: UserAgent | None = None

    @property
    def raw_pii_hashed(self) -> bool:
        """Widget events carry no contact points."""
        return False


Event: TypeAlias = TagEvent | SdkEvent | WidgetEvent

EVENT_MODELS: Mapping[Source, type[Event]] = MappingProxyType(
    {"tag": TagEvent, "sdk": SdkEvent, "widget": WidgetEvent}
)
"""The model for each source."""
