import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("movie",)
    MOVIE_FIELD_NUMBER: _ClassVar[int]
    movie: Movie
    def __init__(self, movie: _Optional[_Union[Movie, _Mapping]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("movie",)
    MOVIE_FIELD_NUMBER: _ClassVar[int]
    movie: Movie
    def __init__(self, movie: _Optional[_Union[Movie, _Mapping]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("movie", "created")
    MOVIE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    movie: Movie
    created: bool
    def __init__(self, movie: _Optional[_Union[Movie, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class TopRatedRequest(_message.Message):
    __slots__ = ("genre", "page_size", "page_token")
    GENRE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    genre: str
    page_size: int
    page_token: str
    def __init__(self, genre: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class TopRatedResponse(_message.Message):
    __slots__ = ("movies", "next_page_token")
    MOVIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    movies: _containers.RepeatedCompositeFieldContainer[Movie]
    next_page_token: str
    def __init__(self, movies: _Optional[_Iterable[_Union[Movie, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class NearbyRequest(_message.Message):
    __slots__ = ("latitude", "longitude", "radius_km", "limit")
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    RADIUS_KM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    latitude: float
    longitude: float
    radius_km: float
    limit: int
    def __init__(self, latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., radius_km: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class NearbyResponse(_message.Message):
    __slots__ = ("theaters",)
    THEATERS_FIELD_NUMBER: _ClassVar[int]
    theaters: _containers.RepeatedCompositeFieldContainer[NearbyTheater]
    def __init__(self, theaters: _Optional[_Iterable[_Union[NearbyTheater, _Mapping]]] = ...) -> None: ...

class NearbyTheater(_message.Message):
    __slots__ = ("theater", "distance_km")
    THEATER_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    theater: Theater
    distance_km: float
    def __init__(self, theater: _Optional[_Union[Theater, _Mapping]] = ..., distance_km: _Optional[float] = ...) -> None: ...

class Movie(_message.Message):
    __slots__ = ("id", "title", "year", "plot", "fullplot", "genres", "runtime", "cast", "directors", "writers", "languages", "countries", "released", "rated", "awards", "imdb", "tomatoes", "metacritic", "poster", "type", "num_mflix_comments", "lastupdated", "year_text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    PLOT_FIELD_NUMBER: _ClassVar[int]
    FULLPLOT_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    CAST_FIELD_NUMBER: _ClassVar[int]
    DIRECTORS_FIELD_NUMBER: _ClassVar[int]
    WRITERS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    COUNTRIES_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    RATED_FIELD_NUMBER: _ClassVar[int]
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    IMDB_FIELD_NUMBER: _ClassVar[int]
    TOMATOES_FIELD_NUMBER: _ClassVar[int]
    METACRITIC_FIELD_NUMBER: _ClassVar[int]
    POSTER_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_MFLIX_COMMENTS_FIELD_NUMBER: _ClassVar[int]
    LASTUPDATED_FIELD_NUMBER: _ClassVar[int]
    YEAR_TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    year: int
    plot: str
    fullplot: str
    genres: _containers.RepeatedScalarFieldContainer[str]
    runtime: int
    cast: _containers.RepeatedScalarFieldContainer[str]
    directors: _containers.RepeatedScalarFieldContainer[str]
    writers: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    countries: _containers.RepeatedScalarFieldContainer[str]
    released: _timestamp_pb2.Timestamp
    rated: str
    awards: Awards
    imdb: Imdb
    tomatoes: Tomatoes
    metacritic: int
    poster: str
    type: str
    num_mflix_comments: int
    lastupdated: str
    year_text: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., year: _Optional[int] = ..., plot: _Optional[str] = ..., fullplot: _Optional[str] = ..., genres: _Optional[_Iterable[str]] = ..., runtime: _Optional[int] = ..., cast: _Optional[_Iterable[str]] = ..., directors: _Optional[_Iterable[str]] = ..., writers: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ..., countries: _Optional[_Iterable[str]] = ..., released: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rated: _Optional[str] = ..., awards: _Optional[_Union[Awards, _Mapping]] = ..., imdb: _Optional[_Union[Imdb, _Mapping]] = ..., tomatoes: _Optional[_Union[Tomatoes, _Mapping]] = ..., metacritic: _Optional[int] = ..., poster: _Optional[str] = ..., type: _Optional[str] = ..., num_mflix_comments: _Optional[int] = ..., lastupdated: _Optional[str] = ..., year_text: _Optional[str] = ...) -> None: ...

class Awards(_message.Message):
    __slots__ = ("wins", "nominations", "text")
    WINS_FIELD_NUMBER: _ClassVar[int]
    NOMINATIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    wins: int
    nominations: int
    text: str
    def __init__(self, wins: _Optional[int] = ..., nominations: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class Imdb(_message.Message):
    __slots__ = ("rating", "votes", "id")
    RATING_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    rating: float
    votes: int
    id: int
    def __init__(self, rating: _Optional[float] = ..., votes: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...

class Tomatoes(_message.Message):
    __slots__ = ("viewer", "critic", "fresh", "rotten", "dvd", "last_updated", "production", "website", "consensus", "box_office")
    VIEWER_FIELD_NUMBER: _ClassVar[int]
    CRITIC_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    ROTTEN_FIELD_NUMBER: _ClassVar[int]
    DVD_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_FIELD_NUMBER: _ClassVar[int]
    WEBSITE_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    BOX_OFFICE_FIELD_NUMBER: _ClassVar[int]
    viewer: TomatoesRating
    critic: TomatoesRating
    fresh: int
    rotten: int
    dvd: _timestamp_pb2.Timestamp
    last_updated: _timestamp_pb2.Timestamp
    production: str
    website: str
    consensus: str
    box_office: str
    def __init__(self, viewer: _Optional[_Union[TomatoesRating, _Mapping]] = ..., critic: _Optional[_Union[TomatoesRating, _Mapping]] = ..., fresh: _Optional[int] = ..., rotten: _Optional[int] = ..., dvd: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., production: _Optional[str] = ..., website: _Optional[str] = ..., consensus: _Optional[str] = ..., box_office: _Optional[str] = ...) -> None: ...

class TomatoesRating(_message.Message):
    __slots__ = ("rating", "num_reviews", "meter")
    RATING_FIELD_NUMBER: _ClassVar[int]
    NUM_REVIEWS_FIELD_NUMBER: _ClassVar[int]
    METER_FIELD_NUMBER: _ClassVar[int]
    rating: float
    num_reviews: int
    meter: int
    def __init__(self, rating: _Optional[float] = ..., num_reviews: _Optional[int] = ..., meter: _Optional[int] = ...) -> None: ...

class Theater(_message.Message):
    __slots__ = ("theater_id", "address", "latitude", "longitude")
    THEATER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    theater_id: int
    address: Address
    latitude: float
    longitude: float
    def __init__(self, theater_id: _Optional[int] = ..., address: _Optional[_Union[Address, _Mapping]] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ...) -> None: ...

class Address(_message.Message):
    __slots__ = ("street1", "street2", "city", "state", "zipcode")
    STREET1_FIELD_NUMBER: _ClassVar[int]
    STREET2_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ZIPCODE_FIELD_NUMBER: _ClassVar[int]
    street1: str
    street2: str
    city: str
    state: str
    zipcode: str
    def __init__(self, street1: _Optional[str] = ..., street2: _Optional[str] = ..., city: _Optional[str] = ..., state: _Optional[str] = ..., zipcode: _Optional[str] = ...) -> None: ...
