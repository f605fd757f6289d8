from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListActionsRequest(_message.Message):
    __slots__ = ("plugin",)
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    plugin: str
    def __init__(self, plugin: _Optional[str] = ...) -> None: ...

class ActionInfo(_message.Message):
    __slots__ = ("path", "plugin", "summary", "changes_state", "destructive", "privilege", "schema_json", "secret_params", "describe_json")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CHANGES_STATE_FIELD_NUMBER: _ClassVar[int]
    DESTRUCTIVE_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    SECRET_PARAMS_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_JSON_FIELD_NUMBER: _ClassVar[int]
    path: str
    plugin: str
    summary: str
    changes_state: bool
    destructive: bool
    privilege: str
    schema_json: str
    secret_params: _containers.RepeatedScalarFieldContainer[str]
    describe_json: str
    def __init__(self, path: _Optional[str] = ..., plugin: _Optional[str] = ..., summary: _Optional[str] = ..., changes_state: _Optional[bool] = ..., destructive: _Optional[bool] = ..., privilege: _Optional[str] = ..., schema_json: _Optional[str] = ..., secret_params: _Optional[_Iterable[str]] = ..., describe_json: _Optional[str] = ...) -> None: ...

class ListActionsResponse(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[ActionInfo]
    def __init__(self, actions: _Optional[_Iterable[_Union[ActionInfo, _Mapping]]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("action", "params_json", "dry_run", "check", "yes", "force_maintenance", "origin")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    YES_FIELD_NUMBER: _ClassVar[int]
    FORCE_MAINTENANCE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    action: str
    params_json: str
    dry_run: bool
    check: bool
    yes: bool
    force_maintenance: bool
    origin: str
    def __init__(self, action: _Optional[str] = ..., params_json: _Optional[str] = ..., dry_run: _Optional[bool] = ..., check: _Optional[bool] = ..., yes: _Optional[bool] = ..., force_maintenance: _Optional[bool] = ..., origin: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event", "json")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    event: str
    json: str
    def __init__(self, event: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("code", "message", "events", "hint")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    hint: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., hint: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JsonResponse(_message.Message):
    __slots__ = ("json", "code")
    JSON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    json: str
    code: int
    def __init__(self, json: _Optional[str] = ..., code: _Optional[int] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ("limit", "id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    id: str
    def __init__(self, limit: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("id", "dry_run", "yes")
    ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    YES_FIELD_NUMBER: _ClassVar[int]
    id: str
    dry_run: bool
    yes: bool
    def __init__(self, id: _Optional[str] = ..., dry_run: _Optional[bool] = ..., yes: _Optional[bool] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditEventsRequest(_message.Message):
    __slots__ = ("since",)
    SINCE_FIELD_NUMBER: _ClassVar[int]
    since: str
    def __init__(self, since: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("user", "password", "oidc_id_token")
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    OIDC_ID_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user: str
    password: str
    oidc_id_token: str
    def __init__(self, user: _Optional[str] = ..., password: _Optional[str] = ..., oidc_id_token: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("token", "user", "roles", "expires_at", "idle_timeout")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    token: str
    user: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    expires_at: float
    idle_timeout: float
    def __init__(self, token: _Optional[str] = ..., user: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., expires_at: _Optional[float] = ..., idle_timeout: _Optional[float] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("kind", "details_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    details_json: str
    def __init__(self, kind: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...
